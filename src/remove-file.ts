// Removing a file that another process may have removed first (a socket, a marker, a log): gone is as good as removed.
import { unlinkSync } from 'node:fs';

export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
