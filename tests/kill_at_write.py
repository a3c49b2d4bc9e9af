"""Run a toolkit script and SIGKILL it just before the rename of its N-th atomic write (for tests/test_faults.py).

    python tests/kill_at_write.py N script.py [flags ...]

At that moment files 1..N-1 are in place and the N-th is complete under its hidden temporary name only: the
process dies part-way through its stage, between two files, with nothing flushed or cleaned up.
"""
import os
import runpy
import signal
import sys
from pathlib import Path


def kill_before_rename(target: int) -> None:
    """Make the `target`-th rename of a utils.io temporary file kill the process instead."""
    replace, count = os.replace, 0

    def killing_replace(src, dst, *args, **kwargs):
        nonlocal count
        if Path(src).name.endswith(".tmp"):
            count += 1
            if count == target:
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = killing_replace


if __name__ == "__main__":
    kill_before_rename(int(sys.argv[1]))
    script = Path(sys.argv[2]).resolve()
    sys.argv = sys.argv[2:]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")
