// Where warm agents and warm session hosts keep their sockets. Its own module because the CLI's entry looks there
// before anything else has loaded (agent-spawn.ts).
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const warmPath = (): string => join(tmpdir(), 'doppel-warm');
