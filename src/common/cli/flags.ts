// The one way every command parses its flags: commander options whose values
// are checked as they are parsed, so a bad value is an InvalidArgumentError
// that names the flag, and `exitOnUsageError` turns it into one line on
// stderr and exit code 2. The choices come from the one list of each
// (models, datasets, backends).
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKEND_CHOICES, type BackendChoice } from '../backend/names.js';
import { DATASET_NAMES, type DatasetName } from '../data/types.js';
import { MODEL_NAMES, type ModelName } from '../model/spec.js';

/** An integer in [min, max]. */
export const intFlag = (min: number, max = Number.MAX_SAFE_INTEGER) => (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER
      ? `expected an integer >= ${min}, got "${value}"`
      : `expected an integer from ${min} to ${max}, got "${value}"`);
  }
  return n;
};

/** A finite number >= min (or > min when `exclusive`). */
export const numberFlag = (min: number, exclusive = false) => (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (exclusive ? n <= min : n < min)) {
    throw new InvalidArgumentError(`expected a number ${exclusive ? '>' : '>='} ${min}, got "${value}"`);
  }
  return n;
};

/** One of `choices`, for the items of a list (a single choice is commander's Option.choices). */
export const choiceFlag = <T extends string>(choices: readonly T[]) => (value: string): T => {
  if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${choices.join(', ')}, got "${value}"`);
  return value as T;
};

/** A comma-separated list, each item parsed by `item` (e.g. --workers 1,2,4). */
export const listFlag = <T>(item: (value: string) => T, example = '1,2,4') => (value: string): T[] => {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => p === '')) throw new InvalidArgumentError(`expected a comma-separated list like ${example}, got "${value}"`);
  return parts.map((p) => {
    try {
      return item(p);
    } catch (err) {
      if (!(err instanceof InvalidArgumentError) || parts.length === 1) throw err;
      throw new InvalidArgumentError(`${err.message} in the list "${value}"`);
    }
  });
};

/** A TCP port; 0 lets the system choose. */
export const portFlag = intFlag(0, 65535);

export const modelOption = (defaultValue?: ModelName, description = 'network') =>
  withDefault(new Option('--model <name>', description).choices([...MODEL_NAMES]), defaultValue);

export const datasetOption = (description = 'training data', defaultValue?: DatasetName) =>
  withDefault(new Option('--dataset <name>', description).choices([...DATASET_NAMES]), defaultValue);

/** `null`: no default (the worker takes the coordinator's). */
export const backendOption = (defaultValue: BackendChoice | null = 'auto', description = 'TensorFlow.js backend') =>
  withDefault(new Option('--backend <name>', description).choices([...BACKEND_CHOICES]), defaultValue ?? undefined);

function withDefault(option: Option, value: string | undefined): Option {
  return value === undefined ? option : option.default(value);
}

/**
 * Bad flags print one line, `NAME: error: <commander's message> (see "NAME
 * [SUB] --help")`, the format of runMain's errors, and exit 2; --help and
 * --version exit 0. Call once on each program, after its subcommands are
 * added: it applies to them too.
 */
export function exitOnUsageError(program: Command): Command {
  const name = program.name();
  const apply = (cmd: Command, path: string): void => {
    cmd.configureOutput({
      outputError: (str, write) => write(`${name}: ${str.trim().replace(/\s*\n\s*/g, ' ')} (see "${path} --help")\n`),
    });
    cmd.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
    for (const sub of cmd.commands) apply(sub, `${path} ${sub.name()}`);
  };
  apply(program, name);
  return program;
}
