// TensorBoard event files (--tensorboard DIR) with the same scalars as
// metrics.jsonl. Only the native package (@tensorflow/tfjs-node[-gpu]) has a
// summary writer; without it the run says so plainly once and goes on, since
// metrics.jsonl already holds every number.

import { loadNativeModule } from '../backend/backend.js';
import type { EpochMetrics } from './metrics.js';

interface SummaryFileWriter {
  scalar(name: string, value: number, step: number): void;
  flush(): void;
}

interface NativeModule {
  node?: { summaryFileWriter?: (logdir: string) => SummaryFileWriter };
}

export class TensorboardLog {
  private constructor(private readonly writer: SummaryFileWriter) {}

  /** A writer for `dir`, or null after logging why TensorBoard files cannot be written here. */
  static async open(dir: string, log: (line: string) => void): Promise<TensorboardLog | null> {
    const native = await loadNativeModule();
    const create = 'name' in native ? (native.module as NativeModule).node?.summaryFileWriter : undefined;
    if (!create) {
      const why = 'name' in native ? `${native.name} has no summaryFileWriter` : native.reason;
      log(`tensorboard: not available (${why}); the same scalars are in metrics.jsonl`);
      return null;
    }
    log(`tensorboard: writing event files to ${dir}`);
    return new TensorboardLog(create(dir));
  }

  epoch(m: EpochMetrics): void {
    const scalars: [string, number][] = [
      ['train/loss', m.train_loss], ['train/accuracy', m.train_acc], ['test/loss', m.test_loss], ['test/accuracy', m.test_acc],
      ['lr', m.lr], ['images_per_s', m.images_per_s], ['epoch_seconds', m.seconds],
    ];
    for (const [name, value] of scalars) this.writer.scalar(name, value, m.epoch);
    this.writer.flush();
  }
}
