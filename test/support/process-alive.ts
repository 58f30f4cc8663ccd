// Whether a process exists: the product's own check (signal 0 reaches it, or it exists as someone else's).
export { isAlive as alive } from '../../src/process-alive.ts';
