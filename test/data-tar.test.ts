import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import * as tar from 'tar';
import { describe, expect, it } from 'vitest';
import { extractTarGz } from '../src/common/data/tar.js';
import { buildTar, tempDirsRemovedAfterEach, type TarFixtureEntry } from './helpers/data-fixtures.js';

const tempDir = tempDirsRemovedAfterEach('tar');

/** Writes `entries` as a .tar.gz (or the given raw bytes, gzipped) and returns its path. */
function archive(dir: string, contents: TarFixtureEntry[] | Buffer, name = 'a.tar.gz'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, zlib.gzipSync(Array.isArray(contents) ? buildTar(contents) : contents));
  return file;
}

/** Every path under `dir`, relative, sorted. */
function tree(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

describe('extractTarGz', () => {
  it('extracts files, directories, ustar prefixes and exact contents, and leaves no temporary files', async () => {
    const root = tempDir();
    const big = Buffer.from(Array.from({ length: 1300 }, (_, i) => (i * 13) & 255)); // spans 3 blocks
    const file = archive(root, [
      { name: 'top/', directory: true },
      { name: 'top/a.txt', data: Buffer.from('hello') },
      { name: 'empty.bin' },
      { name: 'b.bin', prefix: 'top/nested', data: big },
      { name: 'only-a-dir/', directory: true },
    ]);
    const out = path.join(root, 'out', 'not-yet-created');
    expect(await extractTarGz(file, out)).toEqual([path.join(out, 'top', 'a.txt'), path.join(out, 'empty.bin'), path.join(out, 'top', 'nested', 'b.bin')]);
    expect(fs.readFileSync(path.join(out, 'top', 'a.txt'), 'utf8')).toBe('hello');
    expect(fs.readFileSync(path.join(out, 'empty.bin')).length).toBe(0);
    expect(fs.readFileSync(path.join(out, 'top', 'nested', 'b.bin')).equals(big)).toBe(true);
    expect(tree(out)).toEqual(['empty.bin', 'only-a-dir', 'top', 'top/a.txt', 'top/nested', 'top/nested/b.bin']);
  });

  it('rejects a header whose checksum does not match, extracting nothing', async () => {
    const root = tempDir();
    const bytes = buildTar([{ name: 'a.txt', data: Buffer.from('hello') }]);
    bytes[10] ^= 0x01; // flip a bit in the name
    const out = path.join(root, 'out');
    await expect(extractTarGz(archive(root, bytes, 'x.tar.gz'), out)).rejects.toThrow(/x\.tar\.gz is corrupt: .*checksum/);
    expect(tree(out)).toEqual([]);
  });

  it('rejects an archive cut inside an entry, leaving no short file behind', async () => {
    const root = tempDir();
    const bytes = buildTar([{ name: 'first.bin', data: Buffer.alloc(600, 1) }, { name: 'a.bin', data: Buffer.alloc(2000, 7) }]);
    const out = path.join(root, 'out');
    await expect(extractTarGz(archive(root, bytes.subarray(0, 2048), 'x.tar.gz'), out)).rejects.toThrow(/x\.tar\.gz is truncated: .*needed \d+ more bytes/);
    // first.bin was complete, but nothing reaches its final name unless the whole archive is good.
    expect(tree(out)).toEqual([]);
  });

  it('refuses paths that escape the target', async () => {
    const root = tempDir();
    const out = path.join(root, 'out');
    for (const name of ['../escaped.txt', 'd/../../escaped.txt', '/tmp/absolute-escape.txt']) {
      const file = archive(root, [{ name: 'fine.txt', data: Buffer.from('ok') }, { name, data: Buffer.from('no') }]);
      await expect(extractTarGz(file, out)).rejects.toThrow(`contains an unsafe path "${name}"`);
    }
    expect(fs.existsSync(path.join(root, 'escaped.txt'))).toBe(false);
    expect(fs.existsSync('/tmp/absolute-escape.txt')).toBe(false);
    expect(tree(out)).toEqual([]);
  });

  it('skips symbolic and hard links, so none can point outside the target', async () => {
    const root = tempDir();
    const src = path.join(root, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'data.bin'), 'payload');
    fs.symlinkSync('/etc/passwd', path.join(src, 'abs-link'));
    fs.symlinkSync('../../outside', path.join(src, 'rel-link'));
    fs.linkSync(path.join(src, 'data.bin'), path.join(src, 'hard-link'));
    const file = path.join(root, 'links.tar.gz');
    await tar.c({ gzip: true, file, cwd: src }, ['data.bin', 'abs-link', 'rel-link', 'hard-link']);
    const types: string[] = [];
    await tar.t({ file, onReadEntry: (e) => void types.push(`${e.path}:${e.type}`) });
    expect(types).toEqual(['data.bin:File', 'abs-link:SymbolicLink', 'rel-link:SymbolicLink', 'hard-link:Link']);

    const out = path.join(root, 'out');
    expect(await extractTarGz(file, out)).toEqual([path.join(out, 'data.bin')]);
    expect(tree(out)).toEqual(['data.bin']);
    expect(fs.lstatSync(path.join(out, 'data.bin')).isFile()).toBe(true);
  });

  it('reports a file that is not gzip, or gzip that is corrupt, as undecompressable', async () => {
    const root = tempDir();
    const out = path.join(root, 'out');
    const notGzip = path.join(root, 'plain.tar.gz');
    fs.writeFileSync(notGzip, 'not gzip at all');
    await expect(extractTarGz(notGzip, out)).rejects.toThrow(`Cannot decompress ${notGzip}`);

    const corrupt = archive(root, [{ name: 'a.bin', data: Buffer.alloc(4000, 3) }], 'corrupt.tar.gz');
    const bytes = fs.readFileSync(corrupt);
    bytes.fill(0xff, 12, bytes.length - 8); // keep the gzip header, wreck the deflate stream
    fs.writeFileSync(corrupt, bytes);
    await expect(extractTarGz(corrupt, out)).rejects.toThrow(`Cannot decompress ${corrupt}`);
    expect(tree(out)).toEqual([]);

    const missing = path.join(root, 'missing.tar.gz');
    await expect(extractTarGz(missing, out)).rejects.toThrow(`Cannot read ${missing}`);
  });

  it('refuses a decompression bomb', async () => {
    const root = tempDir();
    // 64 MB of zeros compress about 1000:1, past node-tar's ratio limit.
    const file = archive(root, [{ name: 'zeros.bin', data: Buffer.alloc(64 * 1024 * 1024) }], 'bomb.tar.gz');
    const out = path.join(root, 'out');
    await expect(extractTarGz(file, out)).rejects.toThrow(/bomb\.tar\.gz/);
    expect(tree(out)).toEqual([]);
  });
});
