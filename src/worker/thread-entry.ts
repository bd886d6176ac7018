// Task of the coordinator's piscina pool (LocalWorkers, thread mode): one
// task is one replica, running until the coordinator says the run is done.
// A failure rejects the task, which the coordinator reports.
import { runWorker, type WorkerOptions } from './worker.js';

export default async function runReplica(options: WorkerOptions): Promise<void> {
  await runWorker(options);
}
