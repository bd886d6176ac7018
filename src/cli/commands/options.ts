// Flag parsers shared by the tfjs-ddp subcommands; a bad value is a commander
// InvalidArgumentError, which the program turns into exit code 2.
import { InvalidArgumentError, Option } from 'commander';

export const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`expected an integer >= 1, got "${value}"`);
  return n;
};

export const backendOption = () =>
  new Option('--backend <name>', 'TensorFlow.js backend').choices(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto');

export const datasetOption = (description: string) =>
  new Option('--dataset <name>', description).choices(['cifar10', 'fashion-mnist', 'synthetic']);
