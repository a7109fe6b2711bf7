// Types for the `thaw` package (sdk/node). See docs/node.md.

/** The C API's error codes (thaw.h), as Error.code names and Error.errno values. */
export type ThawErrorCode = 'THAW_ERR_INVALID' | 'THAW_ERR_UNSUPPORTED' | 'THAW_ERR_IO' | 'THAW_ERR_FAILED';

/** What checkpoint() and the hooks throw. */
export interface ThawError extends Error {
  code: ThawErrorCode;
  errno: -1 | -2 | -3 | -4;
  /** Errors thrown by hooks (afterRestore after an aborted checkpoint, or in the restored life). */
  errors?: unknown[];
  /** The checkpoint's result when only afterRestore hooks failed. */
  result?: CheckpointResult;
}

export interface CheckpointOptions {
  /** Path of the Ed25519 signing key (`thaw keygen`); without it the image is unsigned. */
  key?: string | null;
  /** The first life exits 0 once the image is written (checkpoint() never returns there). */
  exitAfterSave?: boolean;
  /** Checkpoint although the process has children; they are left out of the image. */
  leaveChildrenOut?: boolean;
  /** Policy for descriptors thaw cannot restore, e.g. 'pipe=drop,251=null' (see setFdPolicy). */
  fdPolicy?: string | null;
  /**
   * After the beforeCheckpoint hooks (default true): V8's optimizing compiler finishes its jobs, a
   * compacting, memory-reducing full garbage collection runs, malloc gives its free pages back.
   * No garbage in the image, and a restore reads less before it answers.
   */
  gc?: boolean;
}

/** The first life, when it goes on after the image is written. */
export interface Saved {
  restored: false;
}

/** A life restored by `thaw run IMAGE -- ARGS`. */
export interface Restored {
  restored: true;
  /** The arguments given to `thaw run` after `--`. */
  args: string[];
  /** The `thaw run` caller's environment (process.env is still the first life's). */
  env: Record<string, string>;
  /** The same, as "KEY=VALUE" strings in order. */
  envList: string[];
  /** How many times this process has been restored (1 for an image's first restore). */
  restores: number;
  /** What was reseeded before any hook ran. */
  reseeded: { openssl: boolean };
}

export type CheckpointResult = Saved | Restored;

export interface BeforeCheckpointInfo {
  path: string;
}

/** In an isolate other than the checkpointing one (a Worker, or the main thread when a Worker
 * checkpointed): its hooks run at its next turn after the restore. */
export interface RestoredElsewhere {
  restored: true;
  elsewhere: true;
  args: string[];
  env: Record<string, string>;
  envList: string[];
  restores: number;
}

/** afterRestore's argument: a result, { restored: false, aborted: true } after a failure, or a
 * restore made by another isolate's checkpoint. */
export type AfterRestoreInfo =
  | CheckpointResult
  | { restored: false; aborted: true; error?: unknown }
  | RestoredElsewhere;

export interface Resource {
  beforeCheckpoint?(info: BeforeCheckpointInfo): void;
  afterRestore?(info: AfterRestoreInfo): void;
}

/** Checkpoints this process; returns again in every restored life. Synchronous. */
export function checkpoint(path: string, options?: CheckpointOptions): CheckpointResult;
/** Registers a resource; returns a function that unregisters it. */
export function register(resource: Resource): () => void;
/** beforeCheckpoint hooks run last-registered first; one that throws aborts the checkpoint. */
export function beforeCheckpoint(fn: (info: BeforeCheckpointInfo) => void): () => void;
/** afterRestore hooks run in registration order, all of them, in whichever life goes on. */
export function afterRestore(fn: (info: AfterRestoreInfo) => void): () => void;
/** Policy for descriptors thaw cannot restore; null clears it. */
export function setFdPolicy(spec: string | null): void;
/** Reseeds OpenSSL and Node's cached random bytes (checkpoint() does this after every restore). */
export function reseed(): { openssl: boolean };
/** True in a restored process. */
export const restored: boolean;
/** How many times this process was restored (0 in the first life). */
export const restores: number;
export const codes: Readonly<Record<ThawErrorCode, number>>;
