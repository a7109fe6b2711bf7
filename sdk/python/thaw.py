"""thaw for CPython: checkpoint a warm interpreter into a signed image; `thaw run` restores it.

    import thaw
    # ... imports and warm-up ...
    restored = thaw.checkpoint("app.thaw", key="k.key", exit_after_save=True)
    # first life: exited once the image is written
    # second life: restored.args, restored.env (what `thaw run IMAGE -- ARGS` passed)

A thin ctypes layer over libthaw.so (the C ABI, see docs/c-api.md). The library is found through
$THAW_LIB, next to this file, or on the loader's path.
"""

import ctypes
import ctypes.util
import os

__all__ = ["checkpoint", "on_checkpoint", "on_restore", "Restored", "ThawError"]

THAW_EXIT_AFTER_SAVE = 1
THAW_LEAVE_CHILDREN_OUT = 2
THAW_SAVED = 0
THAW_RESTORED = 1


class ThawError(Exception):
    """A checkpoint failed; the process continues unchanged. `code` is the C API's error code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Restored:
    """The second life: the arguments after `--` to `thaw run`, and its caller's environment."""

    def __init__(self, args, env):
        self.args = args
        self.env = env

    def __repr__(self):
        return f"Restored(args={self.args!r}, env=<{len(self.env)} variables>)"


_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_hooks = []  # keeps the ctypes callbacks alive
_lib = None


def _library():
    global _lib
    if _lib is None:
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libthaw.so")
        candidates = [os.environ.get("THAW_LIB"), here, ctypes.util.find_library("thaw")]
        path = next((p for p in candidates if p and os.path.exists(p)), None)
        if path is None:
            raise ThawError(-1, "libthaw.so not found (set THAW_LIB)")
        lib = ctypes.CDLL(path)
        lib.thaw_checkpoint.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        lib.thaw_checkpoint.restype = ctypes.c_int
        lib.thaw_last_error.restype = ctypes.c_char_p
        lib.thaw_restored_arg.argtypes = [ctypes.c_int]
        lib.thaw_restored_arg.restype = ctypes.c_char_p
        lib.thaw_restored_env.argtypes = [ctypes.c_int]
        lib.thaw_restored_env.restype = ctypes.c_char_p
        lib.thaw_set_fd_policy.argtypes = [ctypes.c_char_p]
        lib.thaw_set_fd_policy.restype = ctypes.c_int
        lib.thaw_on_checkpoint.argtypes = [_HOOK, ctypes.c_void_p]
        lib.thaw_on_restore.argtypes = [_HOOK, ctypes.c_void_p]
        _lib = lib
    return _lib


def _register(register, fn):
    def call(_ctx):
        try:
            fn()
            return 0
        except Exception:  # a failing hook must not unwind through C
            return 1

    hook = _HOOK(call)
    _hooks.append(hook)
    register(hook, None)
    return fn


def on_checkpoint(fn):
    """Run fn() before every snapshot (close sockets, stop pools); an exception aborts it."""
    return _register(_library().thaw_on_checkpoint, fn)


def on_restore(fn):
    """Run fn() first thing after a restore (reseed random, reopen files)."""
    return _register(_library().thaw_on_restore, fn)


def _fd_spec(fds):
    if fds is None or isinstance(fds, str):
        return fds or ""
    return ",".join(f"{k}={v}" for k, v in fds.items())


def checkpoint(image, key=None, exit_after_save=False, fds=None, leave_children_out=False):
    """Snapshot this process into `image`. Returns None in the first life (or exits 0 with
    exit_after_save), and a Restored in the second life.

    `fds` is the descriptor policy for descriptors thaw cannot restore (a pipe or terminal left
    open by whatever started Python): a dict such as {"pipe": "drop", 251: "null", "any": "drop"}
    or the same as a string "pipe=drop,251=null"; actions are refuse, drop (closed after restore)
    and null (/dev/null at its number). It overrides $THAW_FD_POLICY key by key.

    A process with children (subprocesses, zombies not yet reaped) is refused, naming each,
    unless leave_children_out: the image holds this process alone."""
    lib = _library()
    if lib.thaw_set_fd_policy(_fd_spec(fds).encode()) < 0:
        raise ThawError(-1, lib.thaw_last_error().decode(errors="replace"))
    flags = (THAW_EXIT_AFTER_SAVE if exit_after_save else 0) | (
        THAW_LEAVE_CHILDREN_OUT if leave_children_out else 0)
    r = lib.thaw_checkpoint(os.fsencode(image), os.fsencode(key) if key else None, flags)
    if r < 0:
        raise ThawError(r, lib.thaw_last_error().decode(errors="replace"))
    if r == THAW_SAVED:
        return None
    args = [lib.thaw_restored_arg(i).decode(errors="surrogateescape") for i in range(lib.thaw_restored_argc())]
    env = {}
    for i in range(lib.thaw_restored_envc()):
        k, _, v = lib.thaw_restored_env(i).decode(errors="surrogateescape").partition("=")
        env[k] = v
    return Restored(args, env)
