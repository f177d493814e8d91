import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GUESTS = path.join(ROOT, 'guests', 'build');
export const guest = (name: string): string => path.join(GUESTS, `${name}.elf`);
export const CLI = path.join(ROOT, 'bin', 'tsvmm.cjs');
