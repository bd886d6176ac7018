// Accuracy, per-class accuracy and the confusion matrix of a classifier's
// predictions, plus their plain-text report for `tfjs-ddp evaluate`.

export interface ConfusionSummary {
  /** matrix[trueClass][predictedClass] = count. */
  matrix: number[][];
  total: number;
  correct: number;
  /** Recall of each class; NaN for a class with no samples. */
  perClass: number[];
}

export function summarize(labels: ArrayLike<number>, predictions: ArrayLike<number>, classCount: number): ConfusionSummary {
  if (labels.length !== predictions.length) throw new Error(`${labels.length} labels but ${predictions.length} predictions`);
  const matrix = Array.from({ length: classCount }, () => new Array<number>(classCount).fill(0));
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    const [t, p] = [labels[i], predictions[i]];
    if (!(t >= 0 && t < classCount && p >= 0 && p < classCount)) throw new Error(`sample ${i}: class ${t} or prediction ${p} is not in 0..${classCount - 1}`);
    matrix[t][p]++;
    if (t === p) correct++;
  }
  const perClass = matrix.map((row, c) => {
    const n = row.reduce((a, b) => a + b, 0);
    return n === 0 ? NaN : row[c] / n;
  });
  return { matrix, total: labels.length, correct, perClass };
}

/** Index of the largest value in each row of a [rows, cols] array. */
export function argmaxRows(values: Float32Array, cols: number): Int32Array {
  const rows = values.length / cols;
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (values[r * cols + c] > values[r * cols + best]) best = c;
    out[r] = best;
  }
  return out;
}

/** The report: per-class accuracy, then the matrix with numbered columns (names are too wide for them). */
export function formatConfusion(s: ConfusionSummary, classes: readonly string[]): string {
  const lines: string[] = [];
  const nameWidth = Math.max(...classes.map((c) => c.length));
  const label = (c: number) => `${String(c).padStart(2)} ${classes[c].padEnd(nameWidth)}`;
  lines.push('per-class accuracy:');
  s.matrix.forEach((row, c) => {
    const n = row.reduce((a, b) => a + b, 0);
    const acc = Number.isNaN(s.perClass[c]) ? '     -' : s.perClass[c].toFixed(4);
    lines.push(`  ${label(c)}  ${acc}  (${row[c]}/${n})`);
  });
  lines.push('confusion matrix (rows: true class, columns: predicted class):');
  const cell = Math.max(3, ...s.matrix.flat().map((v) => String(v).length));
  const pad = ' '.repeat(2 + 3 + nameWidth);
  lines.push(`${pad} ${classes.map((_, c) => String(c).padStart(cell)).join(' ')}`);
  s.matrix.forEach((row, c) => lines.push(`  ${label(c)} ${row.map((v) => String(v).padStart(cell)).join(' ')}`));
  return lines.join('\n');
}
