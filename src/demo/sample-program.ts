// The demo's sample program: an ordinary node program that reads a variable, a file, a name and an HTTP service.
// Usage: sample-program VARIABLE FILE URL. Prints one JSON line: for each, what it found or the error code it got.
import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { get } from 'node:http';
import process from 'node:process';

// The demo imports these as types only: importing this module would run it.
export type Seen = { value: string } | { error: string };
export interface SampleReport {
  variable: Seen;
  file: Seen;
  name: Seen;
  service: Seen;
}

const [variable = '', file = '', url = ''] = process.argv.slice(2);
const errorCode = (error: unknown) => ({ error: (error as NodeJS.ErrnoException).code ?? (error as Error).message });

function fetchText(address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = get(address, { agent: false, timeout: 5000 }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve(body.trim()));
    });
    request.on('timeout', () => request.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    request.on('error', reject);
  });
}

const value = process.env[variable];
const report: SampleReport = {
  variable: value === undefined ? { error: 'UNSET' } : { value },
  file: await readFile(file, 'utf8').then((text) => ({ value: text.trim() }), errorCode),
  name: await lookup(new URL(url).hostname, { family: 4 }).then(({ address }) => ({ value: address }), errorCode),
  service: await fetchText(url).then((value) => ({ value }), errorCode),
};
process.stdout.write(`${JSON.stringify(report)}\n`);
