"""The thaw package's hooks, reseeding and errors, checked by examples/tests/python.rs.

    python uniqueness.py IMAGE KEY [--numpy]   # first life: draw values, checkpoint, exit 0
    thaw run IMAGE -- ARGS                     # prints one JSON line (see `report`)
    python uniqueness.py --errors IMAGE_DIR KEY  # bad input: one JSON line, class and code per case
"""

import json
import multiprocessing.synchronize
import multiprocessing.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

import thaw

order = []


@thaw.before_checkpoint
def first_before():
    order.append("before 1")


@thaw.after_restore
def first_after():
    order.append("after 1")


class Pool:
    """A CRaC-style resource: both hooks on one object."""

    def before_checkpoint(self):
        order.append("before 2")

    def after_restore(self):
        order.append("after 2")


thaw.register(Pool())


@thaw.before_checkpoint
def third_before():
    order.append("before 3")


@thaw.after_restore
def third_after():
    # After-restore hooks see the generators already reseeded and can tell the lives apart.
    order.append(f"after 3 restored={thaw.is_restored()}")


def draw(np):
    sqlite = sqlite3.connect(":memory:")
    return {
        "random": random.getrandbits(64),
        "numpy": int(np.random.randint(0, 2**62)) if np else None,
        "tempfile": next(tempfile._get_candidate_names()),
        "uuid4": str(uuid.uuid4()),
        "uuid1_clock_seq": [uuid.uuid1().clock_seq for _ in range(4)],
        # multiprocessing's directory for its sockets (a Manager's, a Listener's): the first
        # restore to end removed the image's one, which later restores' Managers bound in.
        "mp_tempdir": multiprocessing.util.get_temp_dir(),
        # SQLite's own generator, seeded once per process (randomblob() as an id).
        "sqlite_random": sqlite.execute("select hex(randomblob(16))").fetchone()[0],
        # The names of multiprocessing's semaphores (spawn, forkserver: /dev/shm/sem.mp-*).
        "semaphore_name": next(multiprocessing.synchronize.SemLock._rand),
    }


def errors(image_dir, key):
    """Each bad call: the exception's class, code and whether it is a ThawError."""
    out = {}

    def case(name, fn):
        try:
            fn()
            out[name] = None
        except thaw.ThawError as e:
            out[name] = [type(e).__name__, e.code, str(e)]

    img = os.path.join(image_dir, "never.thaw")
    case("bad_fd_policy", lambda: thaw.checkpoint(img, key, fds="pipe=explode"))
    case("empty_path", lambda: thaw.checkpoint("", key))
    case("missing_dir", lambda: thaw.checkpoint(os.path.join(image_dir, "no/such/dir/x.thaw"), key))
    case("missing_key", lambda: thaw.checkpoint(img, os.path.join(image_dir, "no-such.key")))
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    # A line through it first: the child runs cat by then (named so in the refusal).
    child.stdin.write(b"up\n")
    child.stdin.flush()
    child.stdout.readline()
    case("child_process", lambda: thaw.checkpoint(img, key, fds={"any": "drop"}))
    child.stdin.close()
    child.stdout.close()
    child.wait()

    # Shared memory starts multiprocessing's resource tracker, a child the refusal names.
    from multiprocessing import shared_memory

    from multiprocessing import resource_tracker

    shm = shared_memory.SharedMemory(create=True, size=4096)
    # The tracker is forked and executed without waiting: until its exec, it is a copy of this
    # program, not yet recognisable. Wait for its command line (not for a time).
    tracker = resource_tracker._resource_tracker._pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{tracker}/cmdline", "rb") as f:
            if b"resource_tracker" in f.read():
                break
        os.sched_yield()
    case("resource_tracker", lambda: thaw.checkpoint(img, key, fds={"any": "drop"}))
    shm.close()
    shm.unlink()

    @thaw.before_checkpoint
    def refuses():
        raise RuntimeError("not now")

    del order[:]
    case("hook_refuses", lambda: thaw.checkpoint(img, key, fds={"any": "drop"}))
    thaw.unregister(refuses)
    # The refusing hook ran first (registered last): no other before hook ran, and the after hooks
    # that do not pair with a before hook brought the process back.
    out["hook_refuses_order"] = list(order)
    out["image_written"] = os.path.exists(img)
    print(json.dumps(out), flush=True)


def signals(hits):
    """Signals after restore: CPython installs its handlers with SA_ONSTACK, and the main thread
    has no alternate stack; a restored main thread that kept the launcher's crashed here."""
    signal.raise_signal(signal.SIGUSR1)
    try:
        signal.raise_signal(signal.SIGINT)
        hits.append("no KeyboardInterrupt")
    except KeyboardInterrupt:
        hits.append("KeyboardInterrupt")
    return hits


def main():
    if sys.argv[1] == "--errors":
        errors(sys.argv[2], sys.argv[3])
        return
    np = None
    if "--numpy" in sys.argv[3:]:
        import numpy as np
    hits = []
    signal.signal(signal.SIGUSR1, lambda *_: hits.append("SIGUSR1"))
    # CPython's own SIGINT handler, also where whatever started it ignored SIGINT (a background
    # job of a non-interactive shell does, and CPython then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    first = draw(np)  # every generator is initialised (and would be copied) before the image
    life = thaw.checkpoint(sys.argv[1], key=sys.argv[2], exit_after_save=True, fds={"any": "drop"})
    report = {
        "restored": life.restored,
        "args": life.args,
        "env_has_path": "PATH" in life.env,
        "pid": os.getpid(),
        "python": list(sys.version_info[:2]),
        "library": thaw.library_path(),
        "hooks": order,
        "first": first,
        "now": draw(np),
        "signals": signals(hits),
    }
    print(json.dumps(report), flush=True)


main()
