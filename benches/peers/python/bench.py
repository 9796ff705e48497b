"""Shared benchmark driver for the Python peers.

PROGRAM [size] [reps]: runs run(size) reps times (default: the benchmark size,
once), checks that every repetition returns the same text, prints it once, and,
when reps is given, then prints one ``iter_ns=N`` line per repetition (wall
time of that repetition in nanoseconds). The same contract as
benches/programs/*.kasm.
"""

import re
import sys
import time


def _parse(s):
    return int(s) if re.fullmatch(r"[0-9]{1,9}", s) else -1


def _usage():
    sys.stdout.write("usage: PROGRAM [size] [reps] (size and reps: positive decimal integers)\n")
    sys.exit(2)


def main(default_size, run):
    args = sys.argv[1:]
    size, reps = default_size, 1
    if len(args) >= 1:
        size = _parse(args[0])
        if size < 1:
            _usage()
    if len(args) >= 2:
        reps = _parse(args[1])
        if reps < 1:
            _usage()
    times = []
    first = None
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        out = run(size)
        times.append(time.perf_counter_ns() - t0)
        if first is None:
            first = out
        elif first != out:
            sys.stdout.write("error: repetitions gave different results\n")
            sys.exit(1)
    text = first
    if len(args) >= 2:
        text += "".join(f"iter_ns={t}\n" for t in times)
    sys.stdout.write(text)
