"""Start a stage script as `python SCRIPT ARGS...` would, without paying for the interpreter and torch again.

A grid runs dozens of short stages, and a fresh interpreter spends about two seconds importing torch before each
one does any work. Here each stage is a child forked from one server process that imported the heavy libraries
once (multiprocessing's forkserver: single-threaded, so forking is safe even when the grid runs chains in threads,
and no CUDA context is ever created there). The child sends its output to the stage's log and runs the script (a
path relative to the repository root) as `__main__` with its argv, in the grid's working directory, so relative
paths (--workdir, --data-root, logs) mean what they mean to the user wherever reproduce.py was started: the same
program, the same exit status, the same signals (SIGTERM makes training save last.pt) as a subprocess.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

# What nearly every stage imports, slowest first: torch (~2 s), the optimisers' torch._dynamo (~4 s, on the first
# optimiser built), scikit-learn (~3 s, loading the bundled digits); extract and averaging: matplotlib and the
# report modules (~2 s; reports.figures selects the Agg backend first).
# pipeline.forkserver_init (first) makes the server outlive the SIGTERM that Slurm sends to every process of a job.
PRELOAD = ["pipeline.forkserver_init", "torch", "torch._dynamo", "torchvision", "numpy", "scipy.linalg",
           "scipy.stats", "sklearn.datasets", "sklearn.model_selection", "sklearn.metrics", "tqdm", "reports.figures",
           # the report modules by file name: a preload, not an import of this floor (tests/test_floors.py)
           *sorted(f"reports.{path.stem}" for path in (Path(__file__).parents[1] / "reports").glob("seed*")
                   if path.suffix == ".py" or (path / "__init__.py").is_file())]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(PRELOAD)


def _run_script(root: str, argv: list[str], log_path: str, threads: int | None, env: dict[str, str]) -> None:
    """The child: `python root/argv[0] argv[1:]` in the current folder, its output appended to `log_path`, with
    `threads` intra-op threads (None: torch's default) and `env` added to its environment (its GPU: CUDA is not
    initialised in the server, so CUDA_VISIBLE_DEVICES set here is the one the stage sees)."""
    os.environ.update(env)
    fraction = os.environ.get("DIMTOOLKIT_GPU_MEMORY_FRACTION")
    device = argv[argv.index("--device") + 1] if "--device" in argv[:-1] else "auto"
    if fraction and device != "cpu":
        import torch

        if torch.cuda.is_available():   # a device shared by several stages: each keeps to its share
            torch.cuda.set_per_process_memory_fraction(float(fraction))
    if threads is not None:  # the server's torch is imported, so this costs nothing
        import torch

        torch.set_num_threads(threads)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    script = os.path.join(root, argv[0])
    sys.path[0] = root
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


def start_server(ignored: tuple[signal.Signals, ...] = ()) -> None:
    """Start the forkserver now (it imports PRELOAD in the background), before the first stage needs it, and with it
    the resource tracker it shares with the stages, both with the signals `ignored` ignored for life (an ignored
    signal stays ignored through exec, and the stages forked from the server inherit it).

    In a Slurm job (pipeline.commands.Chain) that is SIGUSR2, the time-limit warning Slurm sends to every process of
    the job: by default it kills a process, and killing these two broke the finishing stage. The stage's exit status
    became unknown (the server reports it), and a stage using a semaphore (a DataLoader's queue, named /loky-... once
    joblib is imported) found its tracker dead, started another that wrote to the stage's log, and the unregistering
    of a semaphore the new tracker never saw left a `KeyError: '/loky-...'` traceback there (issue 27). The job's
    own process keeps submitit's handler, which stops the stage with SIGTERM (Chain.checkpoint)."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StageProcess:
    """A running stage with the part of subprocess.Popen's interface that reproduce.py uses."""

    def __init__(self, argv: list[str], root: Path, log: Path, threads: int | None = None,
                 env: dict[str, str] | None = None):
        self._process = _CONTEXT.Process(target=_run_script, name=Path(argv[0]).stem,
                                         args=(str(root), list(argv), str(log), threads, dict(env or {})))
        self._process.start()
        # Every start() first polls the registered children (multiprocessing.process._cleanup), reading a finished
        # child's exit status from its pipe: from another thread while this stage's own thread waits on it, one of
        # the two reads nothing and the stage reports 255 (seen with 2-3 workers). A stage is waited on by its own
        # thread only, so it is not registered.
        multiprocessing.process._children.discard(self._process)
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status; minus the signal's number when a signal ended it (as Popen's)."""
        return self._process.exitcode

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
