import { readFileSync } from 'node:fs';
import { BootError } from './boot-error.js';
import { parseKernelImage, type KernelImage } from './kernel-image.js';

/** Reads a file the user named as `what` (kernel, initrd); every failure names the file and the problem. */
export function readBootFile(what: string, file: string): Uint8Array {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BootError(`${what} file ${file} does not exist`);
    if (code === 'EISDIR') throw new BootError(`${what} file ${file} is a directory`);
    if (code === 'EACCES') throw new BootError(`${what} file ${file} is not readable (permission denied)`);
    throw new BootError(`cannot read ${what} file ${file}: ${(e as Error).message}`);
  }
}

/** Reads and validates a kernel file of any format tsvmm boots; errors start with the file's name. */
export function readKernelFile(file: string): KernelImage {
  const image = readBootFile('kernel', file);
  try {
    return parseKernelImage(image);
  } catch (e) {
    if (e instanceof BootError) throw new BootError(`${file}: ${e.message}`);
    throw e;
  }
}
