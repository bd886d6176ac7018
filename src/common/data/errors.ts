// Errors raised while locating, downloading or decoding a dataset. They carry
// messages written for the person running the CLI: what is wrong, where, and
// what to do about it.

/** A dataset file is present but unusable (corrupt, truncated, wrong format). */
export class DatasetError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatasetError';
  }
}

/** Some files a dataset needs are not on disk. */
export class DatasetMissingError extends DatasetError {
  /** File names (not paths) that were looked for and not found. */
  readonly missing: string[];
  /** Directories that were searched. */
  readonly searched: string[];

  constructor(message: string, missing: string[], searched: string[], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatasetMissingError';
    this.missing = missing;
    this.searched = searched;
  }
}
