"""A SQLite reader checkpointed with its connection open, checked by examples/tests/sqlite.rs.

    python sqlite_reader.py MODE DB IMAGE KEY   # first life: set up, checkpoint, exit 0
    thaw run IMAGE                              # prints one JSON line: what the reader sees

MODE: `wal-txn` (WAL journal, inside a read transaction: the process trusts its snapshot),
`wal-idle` (WAL, no transaction: it reads what is committed by then), `mmap-txn` (rollback
journal with the database mapped, `PRAGMA mmap_size`, inside a read transaction).
"""

import json
import os
import sqlite3
import sys

import thaw

mode, db, image, key = sys.argv[1:5]
conn = sqlite3.connect(db, isolation_level=None)
if mode.startswith("wal"):
    conn.execute("PRAGMA journal_mode=WAL")
else:
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA mmap_size=1048576")
conn.execute("CREATE TABLE IF NOT EXISTS t (x TEXT)")
if conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [("a",)] * 1000)
    conn.execute("COMMIT")


def seen():
    return list(conn.execute("SELECT count(*), min(x), max(x) FROM t").fetchone())


if mode.endswith("txn"):
    conn.execute("BEGIN")
before = seen()
life = thaw.checkpoint(image, key=key, exit_after_save=True)
print(json.dumps({"before": before, "after": seen()}), flush=True)
# Ends without closing the connection: the last one to close checkpoints the WAL into the
# database, which would change what a later restore of the same image finds.
os._exit(0)
