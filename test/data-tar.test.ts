import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { extractTarGz, readTarEntries } from '../src/common/data/tar.js';
import { buildTar, tempDirsRemovedAfterEach } from './helpers/data-fixtures.js';

const tempDir = tempDirsRemovedAfterEach('tar');

describe('tar reader', () => {
  it('reads files, directories, ustar prefixes and exact contents', () => {
    const big = Buffer.from(Array.from({ length: 1300 }, (_, i) => (i * 13) & 255)); // spans 3 blocks
    const archive = buildTar([
      { name: 'top/', directory: true },
      { name: 'top/a.txt', data: Buffer.from('hello') },
      { name: 'empty.bin' },
      { name: 'b.bin', prefix: 'top/nested', data: big },
    ]);
    const entries = readTarEntries(archive);
    expect(entries.map((e) => [e.name, e.type, e.data.length])).toEqual([
      ['top', 'directory', 0],
      ['top/a.txt', 'file', 5],
      ['empty.bin', 'file', 0],
      ['top/nested/b.bin', 'file', 1300],
    ]);
    expect(Buffer.from(entries[1].data).toString()).toBe('hello');
    expect(Buffer.from(entries[3].data).equals(big)).toBe(true);
  });

  it('rejects a header whose checksum does not match', () => {
    const archive = buildTar([{ name: 'a.txt', data: Buffer.from('hello') }]);
    archive[10] ^= 0x01; // flip a bit in the name
    expect(() => readTarEntries(archive, 'x.tar')).toThrow(/x\.tar is corrupt: the tar header at byte 0 has checksum \d+ but its bytes sum to \d+/);
  });

  it('rejects an archive cut inside an entry', () => {
    const archive = buildTar([{ name: 'a.bin', data: Buffer.alloc(2000, 7) }]);
    expect(() => readTarEntries(archive.subarray(0, 1024), 'x.tar')).toThrow(
      'x.tar is truncated: the entry at byte 0 needs 2000 bytes but the archive ends at byte 1024.',
    );
  });

  it('extracts a .tar.gz to disk and refuses paths that escape the target', async () => {
    const root = tempDir();
    const good = path.join(root, 'good.tar.gz');
    fs.writeFileSync(good, zlib.gzipSync(buildTar([{ name: 'd/', directory: true }, { name: 'd/f.txt', data: Buffer.from('x1') }])));
    const out = path.join(root, 'out');
    expect(await extractTarGz(good, out)).toEqual([path.join(out, 'd', 'f.txt')]);
    expect(fs.readFileSync(path.join(out, 'd', 'f.txt'), 'utf8')).toBe('x1');
    expect(fs.readdirSync(path.join(out, 'd'))).toEqual(['f.txt']); // no temporary files left

    const evil = path.join(root, 'evil.tar.gz');
    fs.writeFileSync(evil, zlib.gzipSync(buildTar([{ name: '../escaped.txt', data: Buffer.from('no') }])));
    await expect(extractTarGz(evil, out)).rejects.toThrow('contains an unsafe path "../escaped.txt"');
    expect(fs.existsSync(path.join(root, 'escaped.txt'))).toBe(false);

    const notGzip = path.join(root, 'plain.tar.gz');
    fs.writeFileSync(notGzip, 'not gzip at all');
    await expect(extractTarGz(notGzip, out)).rejects.toThrow(`Cannot decompress ${notGzip}`);
  });
});
