"""A CPython service that warms up (pandas, numpy with its OpenBLAS threads, a good part of the
standard library, a DataFrame, compiled regexes), checkpoints, and answers one request per restore.

    pip install ./sdk/python               # the thaw package (docs/python.md)
    python3 pandas_warm.py IMAGE [KEY]     # first life: warm up, write the image, exit 0
    python3 pandas_warm.py - REQUEST       # cold start: warm up, then answer
    thaw run IMAGE -- REQUEST              # second life: answer at once

REQUEST is a city name: the answer is that city's total sales from the DataFrame, whether the name
matches the compiled patterns, and a random token drawn after the restore (reseeded per restore).
"""

import sys
import time

t0 = time.monotonic()

import asyncio, collections, csv, datetime, decimal, email.parser, fractions, http.client  # noqa: E401,F401
import json, logging, random, re, statistics, uuid, xml.etree.ElementTree  # noqa: E401,F401
import numpy as np
import pandas as pd

try:
    import thaw  # the installed package: pip install ./sdk/python (docs/python.md)
except ImportError:  # not installed: the package's source with $THAW_LIB (benches/startup.rs)
    sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "..", "sdk", "python"))
    import thaw

CITIES = ["Lisbon", "Oslo", "Lima", "Hanoi", "Accra", "Quito", "Perth", "Osaka", "Turin", "Tunis"]
rng = np.random.default_rng(7)
frame = pd.DataFrame(
    {
        "city": pd.Categorical(rng.choice(CITIES, 1_000_000)),
        "sales": rng.integers(1, 1000, 1_000_000),
        "day": pd.date_range("2020-01-01", periods=1_000_000, freq="min"),
    }
)
totals = frame.groupby("city", observed=True)["sales"].sum()
patterns = [re.compile(p) for p in (r"^[A-Z][a-z]+$", r"(?i)o$", r"^(L|O|T)\w{3,5}$")]
warm_ms = (time.monotonic() - t0) * 1000


def answer(request):
    city = request or "Lisbon"
    total = int(totals.get(city, 0))
    matches = [bool(p.search(city)) for p in patterns]
    return f"{city}: total {total}, patterns {matches}, token {random.getrandbits(64):016x}"


# Uniqueness: thaw reseeds `random` (and numpy's global generator, tempfile, uuid) after every
# restore, before any after-restore hook; `rng` above is this program's own Generator, kept as it
# is on purpose (a fixed data set).
restores = []
thaw.after_restore(lambda: restores.append(thaw.is_restored()))

if sys.argv[1] == "-":
    print("python:", answer(sys.argv[2] if len(sys.argv) > 2 else ""), flush=True)
    sys.exit(0)

# Descriptors left open by whatever started Python (a shell's pipe) are closed after restore.
life = thaw.checkpoint(sys.argv[1], key=sys.argv[2] if len(sys.argv) > 2 else None,
                       exit_after_save=True, fds={"any": "drop"})
assert life.restored and restores == [True]
print("python:", answer(life.args[0] if life.args else ""), flush=True)
