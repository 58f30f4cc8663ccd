// `doppel demo`: builds the pod, runs the sample program without and with doppel, prints both side by side, and removes
// everything it made on every way out: success, failure, Ctrl-C or SIGTERM (and, through its children's death signal, SIGKILL).
import { constants } from 'node:os';
import process from 'node:process';
import type { Progress } from '../cli/progress.ts';
import { sweepDeadDemoRoutes } from './host-route.ts';
import { buildPod } from './pod.ts';
import { createPodSpec } from './pod-spec.ts';
import { checkDemoCanRun } from './preflight.ts';
import { closing, describePod, mismatches, sideBySide } from './report.ts';
import { demoFailed, runPlain, runUnderDoppel } from './run-sample.ts';

const stopSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export async function runDemo(progress: Progress, print: (text: string) => void): Promise<number> {
  checkDemoCanRun();
  sweepDeadDemoRoutes();
  const spec = createPodSpec(process.pid);
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => interrupt.abort(signal);
  for (const signal of stopSignals) process.on(signal, onSignal);
  try {
    const pod = await progress.step('building the pod', () => buildPod(spec, process.pid, interrupt.signal));
    try {
      print(describePod(spec, pod));
      const plain = await progress.step('running the sample program on this machine', () => runPlain(spec, interrupt.signal));
      const withDoppel = await progress.step(`running it under doppel exec --target process/${pod.pid}`, () => runUnderDoppel(spec, pod.pid, interrupt.signal));
      print(sideBySide(plain, withDoppel));
      const wrong = mismatches(spec, withDoppel);
      if (wrong.length > 0) {
        throw demoFailed(`under doppel, the sample program did not see the pod's ${wrong.join(', ')}`);
      }
      print(closing);
      return 0;
    } finally {
      await pod.destroy();
    }
  } catch (error) {
    // Interrupted: everything is already removed; the exit status says by what, as a shell would.
    if (typeof interrupt.signal.reason === 'string') return 128 + (constants.signals[interrupt.signal.reason as NodeJS.Signals] ?? 0);
    throw error;
  } finally {
    for (const signal of stopSignals) process.off(signal, onSignal);
  }
}
