/* thaw: checkpoint a warm process into a signed image; `thaw run` restores it with its original
 * PID and memory layout. C ABI of libthaw.so. See docs/c-api.md. */
#ifndef THAW_H
#define THAW_H

#ifdef __cplusplus
extern "C" {
#endif

/* thaw_checkpoint flags */
#define THAW_EXIT_AFTER_SAVE 1u /* the first life exits 0 once the image is written */
#define THAW_LEAVE_CHILDREN_OUT 2u /* checkpoint although the process has children (left out) */

/* thaw_checkpoint results */
#define THAW_SAVED 0            /* first life: the image is written */
#define THAW_RESTORED 1         /* second life: restored by `thaw run` */
#define THAW_ERR_INVALID (-1)   /* a bad argument */
#define THAW_ERR_UNSUPPORTED (-2) /* state thaw cannot restore (message names every item) */
#define THAW_ERR_IO (-3)        /* reading the process or writing the image failed */
#define THAW_ERR_FAILED (-4)    /* anything else (a hook refused, …) */

/* 0 = saved (first life), 1 = restored (second life), < 0 = error (see thaw_last_error) */
int thaw_checkpoint(const char *image_path, const char *key_path /* may be NULL */, unsigned flags);
const char *thaw_last_error(void);        /* thread-local, valid until the next thaw_ call */
int thaw_restores(void);                  /* times this process was restored: 0 in a first life */
int thaw_restored_argc(void);             /* arguments given after `--` to `thaw run` */
const char *thaw_restored_arg(int index);
int thaw_restored_envc(void);             /* the `thaw run` caller's environment */
const char *thaw_restored_env(int index); /* "KEY=VALUE" */

/* Descriptors thaw cannot restore (a pipe, terminal or socket left open by whatever started the
 * process) fail the checkpoint, named. A policy chooses per descriptor or per kind: refuse, drop
 * (left out: a socket or pipe is a dead end at its number after restore, end of file and EPIPE;
 * anything else closed) or null (/dev/null at its number), e.g. "pipe=drop,251=null,any=drop";
 * kinds: pipe, socket, device, deleted, other, any. Applies to every later thaw_checkpoint and
 * overrides THAW_FD_POLICY key by key; NULL or "" clears it. 0, or THAW_ERR_INVALID. */
int thaw_set_fd_policy(const char *spec);

/* Hooks: return 0 to go on. A before-checkpoint hook that fails aborts the checkpoint. */
typedef int (*thaw_hook)(void *ctx);
int thaw_on_checkpoint(thaw_hook hook, void *ctx);
int thaw_on_restore(thaw_hook hook, void *ctx);
/* Runs in a first life that exits after saving (THAW_EXIT_AFTER_SAVE), just before it exits,
 * with its other threads parked: to put back what it changed of state it shares (terminal modes,
 * O_NONBLOCK on standard descriptors). No allocation, no locks other threads may hold. */
int thaw_on_exit_after_save(thaw_hook hook, void *ctx);

/* A signal another process or a terminal sends while a checkpoint runs (a supervisor's SIGTERM,
 * a Ctrl-C) is the first life's: thaw_checkpoint keeps it from the program's handler and gives
 * it to the handler once it returns in the first life; a restore never sees it. A language SDK
 * that runs hooks of its own before calling thaw_checkpoint brackets them and the call with
 * these two (they nest), so that signals coming during its hooks are held too. */
void thaw_hold_signals(void);
void thaw_release_signals(void);

/* Instances from a `thaw serve IMAGE --socket PATH`, started about as cheaply as a fork.
 * thaw_serve_start asks the server at `socket` for an instance with `argv` (what `thaw run` takes
 * after `--`, NULL-terminated; NULL = none), `envp` ("KEY=VALUE", NULL-terminated; NULL = this
 * process's environment) and `stdio` (its standard input, output and error; NULL = 0, 1, 2), and
 * blocks until it runs (or while every slot of the server is taken). It returns a handle, a
 * descriptor that becomes readable when the instance has ended (closing it kills the instance),
 * and stores the instance's PID in its namespace (the image's) at `pid` unless NULL. Errors:
 * THAW_ERR_IO (no server there), THAW_ERR_FAILED (refused, or the restore failed: see
 * thaw_last_error), THAW_ERR_INVALID. */
int thaw_serve_start(const char *socket, const char *const *argv, const char *const *envp,
                     const int *stdio /* [3] or NULL */, int *pid /* may be NULL */);
int thaw_serve_signal(int handle, int sig); /* 0, or < 0 */
int thaw_serve_wait(int handle); /* exit status (128+N for signal N), or < 0; closes the handle */

#ifdef __cplusplus
}
#endif

#endif /* THAW_H */
