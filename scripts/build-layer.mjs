// Builds the C layer (layer/build/libdoppel.so) during `npm install`; says plainly what to install when no C compiler is found.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const layerDir = fileURLToPath(new URL('../layer/', import.meta.url));
const cc = process.env.CC ?? 'cc';
if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(`doppel: no C compiler found (tried '${cc}'); install one (Debian: apt-get install gcc make) and run npm install again`);
  process.exit(1);
}
const make = spawnSync('make', ['-C', layerDir, '--no-print-directory'], { stdio: 'inherit' });
if (make.error) {
  console.error(`doppel: could not run make (${make.error.message}); install it (Debian: apt-get install make) and run npm install again`);
  process.exit(1);
}
process.exit(make.status ?? 1);
