// Atomic file writes: the data goes to a hidden temp file in the target
// directory, is fsynced, then renamed over the final name. Readers (and a
// run resumed after a crash) see either the previous file or the complete
// new one, never a partial one.

import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, written, bytes.byteLength - written);
    written += bytesWritten;
  }
}

/** Makes a rename durable: without it a power cut can forget the new directory entry. */
async function fsyncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (err) {
    // Some platforms and file systems cannot fsync a directory; the rename is still atomic.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    await handle?.close();
  }
}

/**
 * Writes the concatenation of `chunks` to `dir/name` atomically, creating
 * `dir` if needed. On failure the temp file is removed and the error thrown;
 * an existing `dir/name` is untouched. Returns the final path.
 */
export async function writeFileAtomic(dir: string, name: string, chunks: Uint8Array[]): Promise<string> {
  const finalPath = path.join(dir, name);
  await mkdir(dir, { recursive: true });
  const tempPath = path.join(dir, `.${name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let handle: FileHandle | undefined;
  try {
    handle = await open(tempPath, 'wx');
    for (const chunk of chunks) await writeAll(handle, chunk);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(tempPath, finalPath);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlink(tempPath).catch(() => undefined);
    throw err;
  }
  await fsyncDirectory(dir);
  return finalPath;
}
