"""thaw for CPython: checkpoint a warm interpreter into a signed image; ``thaw run`` restores it.

::

    import thaw

    # ... imports and warm-up ...
    life = thaw.checkpoint("app.thaw", key="k.key", exit_after_save=True)
    # first life: exited 0 once the image is written
    # second life (``thaw run app.thaw -- ARGS``): life.restored is True,
    # life.args / life.env are what ``thaw run`` passed

Hooks run around every checkpoint, in CRaC's order: before-checkpoint hooks in reverse order of
registration, after-restore hooks in order of registration::

    @thaw.before_checkpoint
    def close_pool(): ...

    @thaw.after_restore
    def reopen_pool(): ...

After every restore, before any after-restore hook runs, the package reseeds the interpreter's own
generators (``random``, ``tempfile``'s names, ``uuid.uuid1``'s clock sequence, numpy's global
RandomState, OpenSSL's generators): see :func:`reseed` and docs/python.md.

The package is a ctypes layer over ``libthaw.so`` (the C ABI, docs/c-api.md), which the wheel
carries in ``thaw/_native/``. ``$THAW_LIB`` overrides it (a development build of the library).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    TypeVar,
    Union,
)

try:  # Python >= 3.8 has Protocol in typing
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

__all__ = [
    "checkpoint",
    "Saved",
    "Restored",
    "Outcome",
    "is_restored",
    "before_checkpoint",
    "after_restore",
    "on_checkpoint",
    "on_restore",
    "register",
    "unregister",
    "registered",
    "Resource",
    "reseed",
    "library_path",
    "ThawError",
    "InvalidArgumentError",
    "UnsupportedStateError",
    "ImageIOError",
    "CheckpointFailedError",
    "HookError",
    "LibraryNotFoundError",
    "SAVED",
    "RESTORED",
    "ERR_INVALID",
    "ERR_UNSUPPORTED",
    "ERR_IO",
    "ERR_FAILED",
]

# Flags and return values of thaw_checkpoint (sdk/include/thaw.h).
EXIT_AFTER_SAVE = 1
LEAVE_CHILDREN_OUT = 2
SAVED = 0
RESTORED = 1
ERR_INVALID = -1
ERR_UNSUPPORTED = -2
ERR_IO = -3
ERR_FAILED = -4
# The names of the first version of this module (sdk/python/thaw.py).
THAW_EXIT_AFTER_SAVE = EXIT_AFTER_SAVE
THAW_LEAVE_CHILDREN_OUT = LEAVE_CHILDREN_OUT
THAW_SAVED = SAVED
THAW_RESTORED = RESTORED

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
FdPolicy = Union[None, str, Mapping[Union[str, int], str]]
Hook = Callable[[], Any]
H = TypeVar("H", bound=Callable[[], Any])
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# Errors


class ThawError(Exception):
    """A thaw call failed. ``code`` is the C API's error code (``ERR_INVALID`` -1,
    ``ERR_UNSUPPORTED`` -2, ``ERR_IO`` -3, ``ERR_FAILED`` -4); ``message`` is the library's
    message. After a failed checkpoint the process continues unchanged."""

    code: int
    message: str

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (thaw error {self.code})"


class InvalidArgumentError(ThawError, ValueError):
    """A bad argument (``ERR_INVALID``, -1): a malformed descriptor policy, an empty path."""


class UnsupportedStateError(ThawError):
    """State thaw cannot restore (``ERR_UNSUPPORTED``, -2); the message names every item:
    sockets or pipes connected to other processes, child processes, System V shared memory, a
    seccomp filter..."""


class ImageIOError(ThawError):
    """Writing the image or reading the key failed (``ERR_IO``, -3)."""


class CheckpointFailedError(ThawError):
    """The checkpoint failed for another reason (``ERR_FAILED``, -4)."""


class HookError(CheckpointFailedError):
    """A hook raised (``ERR_FAILED``, -4). ``errors`` holds every exception raised (the first is
    also ``__cause__``). A before-checkpoint hook that raises aborts the checkpoint; after-restore
    hooks all run and then this is raised, with ``outcome`` set to what the checkpoint returned
    (the process *was* restored when ``outcome.restored``)."""

    def __init__(
        self, message: str, errors: List[BaseException], outcome: Optional["Outcome"] = None
    ) -> None:
        super().__init__(ERR_FAILED, message)
        self.errors = errors
        self.outcome = outcome


class LibraryNotFoundError(ThawError, ImportError):
    """libthaw.so is neither in the package nor at ``$THAW_LIB`` (``ERR_FAILED``)."""

    def __init__(self, message: str) -> None:
        ThawError.__init__(self, ERR_FAILED, message)


_BY_CODE = {
    ERR_INVALID: InvalidArgumentError,
    ERR_UNSUPPORTED: UnsupportedStateError,
    ERR_IO: ImageIOError,
    ERR_FAILED: CheckpointFailedError,
}


def _error(code: int, message: str) -> ThawError:
    return _BY_CODE.get(code, ThawError)(code, message)


# ---------------------------------------------------------------------------------------------
# The library


_lib: Optional[ctypes.CDLL] = None
_lib_lock = threading.Lock()


def library_path() -> str:
    """The libthaw.so this package uses: ``$THAW_LIB`` when set, else the one in the wheel."""
    override = os.environ.get("THAW_LIB")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", "lib_native.so")


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            path = library_path()
            if not os.path.exists(path):
                raise LibraryNotFoundError(
                    f"libthaw.so not found at {path}: install the thaw wheel "
                    "(pip install ./sdk/python) or set THAW_LIB"
                )
            lib = ctypes.CDLL(path)
            lib.thaw_checkpoint.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            lib.thaw_checkpoint.restype = ctypes.c_int
            lib.thaw_last_error.argtypes = []
            lib.thaw_last_error.restype = ctypes.c_char_p
            lib.thaw_restores.argtypes = []
            lib.thaw_restores.restype = ctypes.c_int
            lib.thaw_restored_argc.argtypes = []
            lib.thaw_restored_argc.restype = ctypes.c_int
            lib.thaw_restored_arg.argtypes = [ctypes.c_int]
            lib.thaw_restored_arg.restype = ctypes.c_char_p
            lib.thaw_restored_envc.argtypes = []
            lib.thaw_restored_envc.restype = ctypes.c_int
            lib.thaw_restored_env.argtypes = [ctypes.c_int]
            lib.thaw_restored_env.restype = ctypes.c_char_p
            lib.thaw_set_fd_policy.argtypes = [ctypes.c_char_p]
            lib.thaw_set_fd_policy.restype = ctypes.c_int
            lib.thaw_hold_signals.argtypes = []
            lib.thaw_hold_signals.restype = None
            lib.thaw_release_signals.argtypes = []
            lib.thaw_release_signals.restype = None
            _lib = lib
        return _lib


def _last_error(lib: ctypes.CDLL) -> str:
    msg = lib.thaw_last_error()
    return msg.decode(errors="replace") if msg else ""


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True)
class Saved:
    """The first life, continuing after the image was written (``exit_after_save=False``)."""

    image: str
    restored: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Restored:
    """The second life: the arguments given after ``--`` to ``thaw run`` and the ``thaw run``
    caller's environment (``os.environ`` is still the first life's)."""

    args: List[str]
    env: Dict[str, str]
    restored: bool = field(default=True, init=False)

    def __repr__(self) -> str:
        return f"Restored(args={self.args!r}, env=<{len(self.env)} variables>)"


Outcome = Union[Saved, Restored]

def is_restored() -> bool:
    """True in a process that came back from an image, in every thread (ctypes lets go of the
    GIL during the checkpoint: another thread may run before ``checkpoint()`` has returned)."""
    lib = _lib
    return lib is not None and lib.thaw_restores() > 0


# ---------------------------------------------------------------------------------------------
# Hooks


class Resource(Protocol):
    """What :func:`register` takes: an object with either method or both (CRaC's Resource)."""

    def before_checkpoint(self) -> Any: ...

    def after_restore(self) -> Any: ...


@dataclass
class _Entry:
    owner: object
    before: Optional[Hook]
    after: Optional[Hook]


_entries: List[_Entry] = []
_hooks_lock = threading.Lock()


def _add(owner: object, before: Optional[Hook], after: Optional[Hook]) -> None:
    with _hooks_lock:
        _entries.append(_Entry(owner, before, after))


def before_checkpoint(fn: H) -> H:
    """Decorator: run ``fn()`` before every checkpoint (close sockets to other processes, stop
    pools, flush). Before-checkpoint hooks run in reverse order of registration; one that raises
    aborts the checkpoint (:class:`HookError`) and the process continues."""
    if not callable(fn):
        raise TypeError(f"before_checkpoint needs a callable, not {type(fn).__name__}")
    _add(fn, fn, None)
    return fn


def after_restore(fn: H) -> H:
    """Decorator: run ``fn()`` after every checkpoint once the process continues: first thing
    after a restore (after the package's own reseeding), and in the first life when it goes on
    (``exit_after_save=False``, or the checkpoint failed). In order of registration; every hook
    runs even if one raises (then :func:`checkpoint` raises :class:`HookError`). Inside a hook,
    :func:`is_restored` tells the lives apart."""
    if not callable(fn):
        raise TypeError(f"after_restore needs a callable, not {type(fn).__name__}")
    _add(fn, None, fn)
    return fn


# The names of the first version of this module.
on_checkpoint = before_checkpoint
on_restore = after_restore


def register(resource: R) -> R:
    """Register an object with a ``before_checkpoint()`` and/or ``after_restore()`` method (a
    :class:`Resource`, as CRaC's ``Context.register``); returns it."""
    before = getattr(resource, "before_checkpoint", None)
    after = getattr(resource, "after_restore", None)
    if not callable(before) and not callable(after):
        raise TypeError(
            f"{type(resource).__name__} has neither before_checkpoint() nor after_restore()"
        )
    _add(resource, before if callable(before) else None, after if callable(after) else None)
    return resource


def unregister(hook_or_resource: object) -> bool:
    """Remove the latest registration of a hook or resource; False if it was not registered."""
    with _hooks_lock:
        for i in range(len(_entries) - 1, -1, -1):
            if _entries[i].owner is hook_or_resource:
                del _entries[i]
                return True
    return False


@contextlib.contextmanager
def registered(resource: R) -> Iterator[R]:
    """``with thaw.registered(pool):`` registers a :class:`Resource` for the block only."""
    register(resource)
    try:
        yield resource
    finally:
        unregister(resource)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# ---------------------------------------------------------------------------------------------
# Reseeding


def _stdout_rule() -> Optional[bool]:
    """Whether ``sys.stdout`` is line-buffered by CPython's rule at start (line-buffered exactly
    when it is a terminal, and not written through: ``-u``), so that a restore applies the rule
    again to the stdout it is given; ``None`` where the program chose otherwise."""
    out = sys.stdout
    try:
        if out is None or out.write_through or out.fileno() != 1:
            return None
        tty = os.isatty(1)
    except (AttributeError, OSError, ValueError):
        return None
    return tty if out.line_buffering == tty else None


def _stdout_again(rule: Optional[bool]) -> None:
    """After a restore: stdout line-buffered exactly when it is a terminal now, as CPython would
    have made it at start (restored onto a terminal from a pipe, a line printed before a wait
    appeared only at exit)."""
    if rule is None:
        return
    tty = os.isatty(1)
    if tty != rule:
        try:
            sys.stdout.reconfigure(line_buffering=tty)  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            pass


def reseed() -> List[str]:
    """Reseed the interpreter's own generators, as :func:`checkpoint` does after every restore
    before any after-restore hook; returns what it reseeded. Only modules already imported are
    touched (one imported later seeds itself then):

    - ``random``: the module-level generator (``random.random()``, ``choice``, ``shuffle``...),
      from ``os.urandom``. ``random.SystemRandom``, ``secrets`` and ``uuid.uuid4`` read
      ``os.urandom`` on every call and need nothing.
    - ``tempfile``: its name generator (it reseeds only when the PID changes, and a restore
      keeps the PID).
    - ``multiprocessing``: its directory for sockets (``pymp-*``, a Manager's or a Listener's),
      made before the checkpoint, is forgotten: the first restore to end would remove it under
      every later one. Each restore makes its own, removed at its exit. Where the first life
      exited after saving (and so removed nothing), the image's is removed if empty.
    - ``uuid``: ``uuid1`` no longer goes through libuuid (whose clock sequence lives in this
      process's memory) but through the module's own code, which draws a clock sequence from
      the reseeded ``random``; a random (not hardware) node is drawn again.
    - ``numpy``: the global RandomState behind ``numpy.random.*`` functions, with fresh entropy.
      ``Generator`` objects the application made (``numpy.random.default_rng()``) are its own.
    - ``ssl``: fresh entropy mixed into OpenSSL's generator (it reseeds on a PID change only).
    - ``cryptography``: the same for the OpenSSL its wheel carries, a copy of its own (keys
      generated after a restore would otherwise be the same in every restore).
    - ``multiprocessing.synchronize``: the name generator of its semaphores (like ``tempfile``'s,
      it reseeds only when the PID changes).
    """
    done = []
    mods = sys.modules
    random = mods.get("random")
    if random is not None:
        random.seed()
        done.append("random")
    tempfile = mods.get("tempfile")
    if tempfile is not None and hasattr(tempfile, "_name_sequence"):
        tempfile._name_sequence = None  # type: ignore[attr-defined]
        done.append("tempfile")
    # A semaphore's name (spawn and forkserver: /dev/shm/sem.mp-*) comes from a name sequence
    # made at import, which reseeds on a PID change only: every restore drew the same names.
    semlock = getattr(mods.get("multiprocessing.synchronize"), "SemLock", None)
    names = getattr(semlock, "_rand", None)
    if names is not None and hasattr(type(names), "rng"):
        names._rng_pid = None  # its next name draws a fresh generator
        done.append("multiprocessing.synchronize")
    mp_process = mods.get("multiprocessing.process")
    config = getattr(mp_process.current_process(), "_config", None) if mp_process else None
    if isinstance(config, dict) and config.get("tempdir") is not None:
        # multiprocessing's directory for its sockets (pymp-XXXX), made before the checkpoint:
        # the first restore to end removes it (a finalizer), and every later restore's Manager,
        # Listener or forkserver would bind in a directory that is gone. Each restore makes its
        # own, removed at its exit; the image's is left alone.
        old = config.pop("tempdir")
        util = mods.get("multiprocessing.util")
        registry = getattr(util, "_finalizer_registry", None) or {}
        for fin in list(registry.values()):
            if old in (getattr(fin, "_args", None) or ()):
                fin.cancel()
        if _first_life_exits:
            # A first life that exited after saving ran no finalizer: nobody would remove the
            # image's directory. Removed where it is empty (a Listener restored in it keeps it).
            try:
                os.rmdir(old)
            except OSError:
                pass
        done.append("multiprocessing")
    uuid = mods.get("uuid")
    if uuid is not None:
        if getattr(uuid, "_generate_time_safe", None) is not None:
            uuid._generate_time_safe = None  # type: ignore[attr-defined]
        if hasattr(uuid, "_last_timestamp"):
            uuid._last_timestamp = None  # type: ignore[attr-defined]
        node = getattr(uuid, "_node", None)
        if node is not None and node & (1 << 40):  # multicast bit: a random node
            uuid._node = None  # type: ignore[attr-defined]
        done.append("uuid")
    np_random = mods.get("numpy.random")
    if np_random is not None and hasattr(np_random, "seed"):
        np_random.seed()
        done.append("numpy.random")
    ssl = mods.get("ssl")
    if ssl is not None and hasattr(ssl, "RAND_add"):
        ssl.RAND_add(os.urandom(48), 48.0)
        done.append("ssl")
    if "cryptography.hazmat.bindings._rust" in mods:
        try:
            from cryptography.hazmat.bindings.openssl.binding import Binding

            Binding().lib.RAND_add(os.urandom(48), 48, 48.0)
            done.append("cryptography")
        except Exception:  # a build without RAND_add in its bindings: its keys are its own
            pass
    return done


# ---------------------------------------------------------------------------------------------
# Checkpoint


_checkpoint_lock = threading.RLock()
_in_checkpoint = False
# Set while the checkpoint of a first life that exits after saving runs: a restore from it
# knows that the first life is gone (see reseed).
_first_life_exits = False


def _fd_spec(fds: FdPolicy) -> Optional[bytes]:
    if fds is None:
        return None
    if isinstance(fds, str):
        return fds.encode()
    if isinstance(fds, Mapping):
        return ",".join(f"{k}={v}" for k, v in fds.items()).encode()
    raise TypeError(f"fds must be a str or a mapping, not {type(fds).__name__}")


def _run_after(entries: List[_Entry]) -> List[BaseException]:
    errors: List[BaseException] = []
    for e in entries:
        if e.after is None:
            continue
        try:
            e.after()
        except Exception as exc:  # every hook runs; the errors are raised together
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"in after-restore hook {_name(e.owner)}")
            errors.append(exc)
    return errors


def checkpoint(
    image: PathLike,
    key: Optional[PathLike] = None,
    exit_after_save: bool = False,
    fds: FdPolicy = None,
    leave_children_out: bool = False,
    reseed_after_restore: bool = True,
) -> Outcome:
    """Snapshot this process into ``image``, signed with the Ed25519 secret key at ``key``.

    Returns :class:`Saved` in the first life (or exits 0 once the image is written, with
    ``exit_after_save``) and :class:`Restored` in each process ``thaw run`` restores from the
    image; ``outcome.restored`` tells them apart. Every Python thread comes back where it was.

    ``fds`` is the policy for descriptors thaw cannot restore (a pipe or terminal left open by
    whatever started Python): a mapping such as ``{"pipe": "drop", 251: "null", "any": "drop"}``
    or the same as a string ``"pipe=drop,251=null"``; actions are ``refuse``, ``drop`` (closed
    after restore) and ``null`` (``/dev/null`` at its number). It overrides ``$THAW_FD_POLICY``
    key by key; None leaves ``$THAW_FD_POLICY`` alone.

    A process with children (subprocesses, zombies not yet reaped) is refused, naming each,
    unless ``leave_children_out``: the image then holds this process alone.

    Before-checkpoint hooks run first (reverse registration order); after a restore the package
    reseeds the interpreter's generators (:func:`reseed`; ``reseed_after_restore=False`` skips
    it) and then runs the after-restore hooks (registration order).

    Raises a :class:`ThawError` subclass carrying the C API's code: :class:`InvalidArgumentError`
    (-1), :class:`UnsupportedStateError` (-2), :class:`ImageIOError` (-3),
    :class:`CheckpointFailedError` or :class:`HookError` (-4). After an error the process
    continues unchanged (after-restore hooks have run for the before-checkpoint hooks that ran).
    """
    global _in_checkpoint, _first_life_exits
    image_b = os.fsencode(image)
    key_b = os.fsencode(key) if key is not None else None
    if not image_b:
        raise InvalidArgumentError(ERR_INVALID, "the image path is empty")
    spec = _fd_spec(fds)
    lib = _library()
    with _checkpoint_lock:
        if _in_checkpoint:
            raise InvalidArgumentError(ERR_INVALID, "checkpoint() called from a thaw hook")
        _in_checkpoint = True
        # A signal another process sends from here on (a supervisor's SIGTERM, a Ctrl-C) is
        # the first life's: its handler runs once this call returns there, never in a restore
        # (CPython's C handler would otherwise have flagged it in the image).
        lib.thaw_hold_signals()
        try:
            if lib.thaw_set_fd_policy(spec) < 0:
                raise _error(ERR_INVALID, _last_error(lib))
            with _hooks_lock:
                entries = list(_entries)
            # Before-checkpoint hooks, last registered first; after a failure, the after hooks of
            # those that ran (and the after-only ones) bring the process back.
            ran: List[_Entry] = []
            for e in reversed(entries):
                if e.before is None:
                    continue
                try:
                    e.before()
                except Exception as exc:
                    resumed = [x for x in entries if x.before is None or x in ran]
                    errors = _run_after(resumed)
                    err = HookError(
                        f"before-checkpoint hook {_name(e.owner)} raised {exc!r}; "
                        "no checkpoint was taken",
                        [exc, *errors],
                    )
                    raise err from exc
                ran.append(e)
            flags = (EXIT_AFTER_SAVE if exit_after_save else 0) | (
                LEAVE_CHILDREN_OUT if leave_children_out else 0
            )
            stdout_rule = _stdout_rule()
            _first_life_exits = exit_after_save
            r = lib.thaw_checkpoint(image_b, key_b, flags)
            outcome: Optional[Outcome] = None
            failure: Optional[ThawError] = None
            if r == RESTORED:
                _stdout_again(stdout_rule)
                if reseed_after_restore:
                    reseed()
            _first_life_exits = False
            if r == RESTORED:
                args = [
                    os.fsdecode(lib.thaw_restored_arg(i) or b"")
                    for i in range(lib.thaw_restored_argc())
                ]
                env: Dict[str, str] = {}
                for i in range(lib.thaw_restored_envc()):
                    k, _, v = os.fsdecode(lib.thaw_restored_env(i) or b"").partition("=")
                    env[k] = v
                outcome = Restored(args, env)
            elif r == SAVED:
                outcome = Saved(os.fsdecode(image_b))
            else:
                failure = _error(r, _last_error(lib))
            errors = _run_after(entries)
            if failure is not None:
                if errors:
                    failure.__context__ = errors[0]
                raise failure
            assert outcome is not None
            if errors:
                raise HookError(
                    f"{len(errors)} after-restore hook(s) raised, first {errors[0]!r}",
                    errors,
                    outcome,
                ) from errors[0]
            return outcome
        finally:
            _in_checkpoint = False
            lib.thaw_release_signals()
