"""Run a toolkit script and SIGKILL it just before the rename of its N-th atomic write (for
tests/stages/test_faults.py).

    python tests/kill_at_write.py N script.py [flags ...]

At that moment files 1..N-1 are in place and the N-th is complete under its hidden temporary name only: the
process dies part-way through its stage, between two files, with nothing flushed or cleaned up.
"""
import os
import runpy
import signal
import sys
from pathlib import Path


def renaming(replace, on_rename):
    """`replace` (os.replace) calling `on_rename(count)` just before the count-th rename of a utils.io temporary
    file; test_faults.py counts a stage's writes with it."""
    count = 0

    def wrapped(src, dst, *args, **kwargs):
        nonlocal count
        if Path(src).name.endswith(".tmp"):
            count += 1
            on_rename(count)
        return replace(src, dst, *args, **kwargs)

    return wrapped


def kill_at(target: int):
    """An on_rename that kills the process at the `target`-th rename."""
    def on_rename(count: int) -> None:
        if count == target:
            os.kill(os.getpid(), signal.SIGKILL)
    return on_rename


if __name__ == "__main__":
    os.replace = renaming(os.replace, kill_at(int(sys.argv[1])))
    script = Path(sys.argv[2]).resolve()
    sys.argv = sys.argv[2:]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")
