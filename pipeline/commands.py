"""The commands of a grid and the chains that run them: one stage's command line, its log and done mark; a run's
chain with its lock; running a command as a forked stage (pipeline.stage_process); the grid's stop flag (SIGTERM,
Ctrl-C) and the cores shared among running stages; and what a chain does inside a Slurm job when it is stopped.

Module-level state (THREADS, DEVICES, STOPPING, RUNNING) belongs to the process that runs the chains: the local
launcher, or the Slurm task that unpickled a chain (submitit pickles chains by reference to this module, so none of
it travels).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.stage_process import StageProcess, start_server
from utils.cli import EXIT_INTERRUPTED
from utils.cpus import allotted_cpus
from utils.errors import ToolkitError
from utils.io import load_json
from utils.rundir import DONE_FILE, TRAIN_FILES

ROOT = Path(__file__).resolve().parents[1]   # the scripts' folder
RUNNING: dict[str, StageProcess] = {}       # chain label -> its running stage, for Chain.checkpoint


@dataclass
class Command:
    stage: str
    argv: list[str]
    done_dir: Path | None  # None: always run (averaging)
    log: Path
    group: Path | None = None  # the <dataset>/<model> folder a group stage or its extraction needs complete
    needs: tuple[Path, ...] = ()  # other such folders it needs complete (a width sweep: every other width's)
    # done | skipped | failed | interrupted (stopped by SIGTERM: Slurm requeue, pre-emption, time limit; the same
    # command continues) | busy (another process holds the chain) | pending (not reached)
    status: str = "pending"
    seconds: float = 0.0

    def shell(self) -> str:
        return shlex.join(["python", *self.argv])

    def is_done(self) -> bool:
        if self.done_dir is None:
            return False
        marker = self.done_dir / DONE_FILE
        if not marker.is_file():
            return False
        try:
            return load_json(marker).get("argv") == self.argv[1:]
        except ToolkitError:
            return False


@dataclass
class Chain:
    """The commands of one run (lock: <run>/logs/.lock), in order; a failure or an interruption stops the chain.

    Submitted to Slurm as it is (submitit pickles it), so submitit sees `checkpoint`: at the time-limit or
    pre-emption signal the running stage is stopped with SIGTERM (training saves last.pt) and the chain is
    requeued; the next attempt skips finished stages and training resumes. A stage that Slurm itself stops
    (`scontrol requeue`, pre-emption) ends the attempt without a result, so reproduce.py waits for the next one."""

    label: str
    lock: Path
    commands: list[Command] = field(default_factory=list)
    since: float = field(default_factory=time.time)  # stages finished after this were done by this grid
    env: dict[str, str] = field(default_factory=dict)  # added to its stages' environment (submitit-local: a GPU)
    max_stalls: int | None = None  # Slurm (--max-timeouts): time limits in a row without progress before it stops
    stalls: int = 0                # the attempts in a row that reached the time limit without progress
    progress_at_start: tuple = ()  # progress() when this attempt started

    def __call__(self, progress=None) -> Chain:
        for command in self.commands:  # a requeued attempt retries what the previous one did not finish
            if command.status in ("interrupted", "busy"):
                command.status = "pending"
        in_job = _in_slurm_job()
        self.progress_at_start = self.progress()
        # in a Slurm task the stage server's BLAS gets the task's cores, unless the user's OMP_NUM_THREADS came along;
        # the server, its resource tracker and the stages ignore the time-limit signal (USR2), which reaches every
        # process of the job: this process's submitit handler stops the running stage (checkpoint)
        with server_blas_threads(allotted_cpus()) if in_job else contextlib.nullcontext():
            if in_job:
                start_server(ignored=(signal.SIGUSR2,))
            self._run(progress)
        if in_job and any(c.status == "interrupted" for c in self.commands):
            _end_interrupted_attempt()
        failed = next((c for c in self.commands if c.status == "failed"), None)
        if in_job and failed is not None:  # the job fails, so Slurm never starts what depends on it (afterok)
            raise ChainFailed(f"{failed.stage} failed: {failed.shell()}  (log: {failed.log})")
        return self

    def _run(self, progress) -> None:
        with exclusive(self.lock) as acquired:
            if not acquired:  # another reproduce.py process is running this chain
                for command in self.commands:
                    command.status = "busy"
            for command in self.commands:
                if command.status == "pending":
                    if STOPPING.is_set():  # stop_on_sigterm: start nothing new
                        command.status = "interrupted"
                    else:
                        run_command(command, self)
                if progress is not None:
                    progress.update(1)
                if command.status in ("failed", "interrupted"):
                    break

    def progress(self) -> tuple:
        """What an attempt advances: which of its stages are done, and the time of training's last.pt (saved after
        every epoch)."""
        def saved(command: Command) -> int | None:
            last = command.done_dir / TRAIN_FILES["last"] if command.done_dir is not None else None
            return last.stat().st_mtime_ns if last is not None and last.is_file() else None

        return tuple((command.is_done(), saved(command)) for command in self.commands)

    def checkpoint(self, *args, **kwargs):
        """submitit's hook for Slurm's time-limit signal: stop the running stage as Slurm would (SIGTERM: training
        saves last.pt and exits), then requeue this chain. submitit requeues the job and ends this attempt; the next
        one skips the finished stages and training resumes from last.pt.

        A chain is given up (None: submitit requeues no more) only after `max_stalls` + 1 attempts in a row that
        neither finished a stage nor saved a training epoch: a long chain goes through as many time limits as it
        needs (submitit's own count of time limits is set out of reach, pipeline.slurm)."""
        import submitit

        running = RUNNING.get(self.label)
        if running is not None:
            with contextlib.suppress(ProcessLookupError):
                running.send_signal(signal.SIGTERM)
        self.stalls = self.stalls + 1 if self.progress() == self.progress_at_start else 0
        if self.max_stalls is not None and self.stalls > self.max_stalls:
            return None
        if _in_slurm_job():
            _survive_own_requeue()
        return submitit.helpers.DelayedSubmission(self)


class ChainFailed(RuntimeError):
    """A stage of a chain run as a Slurm job failed: the job ends failed (its dependents are never started)."""


class ThreadShare:
    """The cores of a local grid shared among the tasks (chains, group stages) running in parallel (--jobs): a
    stage gets cores / min(jobs, tasks running) threads when it starts (torch.set_num_threads in the stage), so
    what runs alone (the last chain, averaging) gets every core; on Slurm a chain's stages get its job's cores.
    OMP_NUM_THREADS, when set, is the number of cores to share."""

    def __init__(self):
        self.jobs, self.running, self.lock = 1, 0, threading.Lock()
        self.cores: int | None = None   # fixed by main before it sets OMP_NUM_THREADS for the stage server

    @staticmethod
    def usable_cores() -> int:
        return int(os.environ.get("OMP_NUM_THREADS") or 0) or allotted_cpus()  # a user's cap first

    def change(self, delta: int) -> None:
        with self.lock:
            self.running += delta

    def threads(self) -> int:
        return max(1, (self.cores or self.usable_cores()) // max(1, min(self.jobs, self.running)))


class DevicePool:
    """The GPUs of a local grid, one per running stage (issue 27): a stage takes a free device when it starts and
    sees only that one (CUDA_VISIBLE_DEVICES); with `per_device` > 1 that many stages share a device, each held to
    that fraction of its memory (DIMTOOLKIT_GPU_MEMORY_FRACTION, applied in the stage process). Not configured:
    stages see what the grid sees (the CPU, or Slurm's allocation inside a job)."""

    def __init__(self):
        self.free: list[str] = []
        self.per_device = 0             # 0: no devices to place
        self.lock = threading.Condition()

    def configure(self, devices: list[str], per_device: int = 1) -> None:
        self.per_device = max(1, per_device) if devices else 0
        self.free = [device for _ in range(self.per_device) for device in devices]

    @staticmethod
    def visible() -> list[str]:
        """The devices a grid may use: CUDA_VISIBLE_DEVICES when set, else every GPU torch sees."""
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        if listed is not None:
            return [device.strip() for device in listed.split(",") if device.strip() not in ("", "-1")]
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]

    @contextlib.contextmanager
    def placed(self):
        """The environment of a stage started now: {} when no devices are placed, else one free device (waiting
        until one is free)."""
        if not self.per_device:
            yield {}
            return
        with self.lock:
            while not self.free:
                self.lock.wait()
            device = self.free.pop(0)
        env = {"CUDA_VISIBLE_DEVICES": device}
        if self.per_device > 1:
            env["DIMTOOLKIT_GPU_MEMORY_FRACTION"] = f"{1 / self.per_device:.6g}"
        try:
            yield env
        finally:
            with self.lock:
                self.free.append(device)
                self.lock.notify()


DEVICES = DevicePool()


@contextlib.contextmanager
def server_blas_threads(threads: int):
    """OMP_NUM_THREADS = `threads` for the stage server started inside (numpy's BLAS sizes its pool when imported
    there; torch's threads are set per stage by ThreadShare), unless the user set it; restored afterwards."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


THREADS = ThreadShare()


class StopFlag:
    """Set by SIGTERM (or Ctrl-C) to a local reproduce.py, with the stages running now (`running`, for
    stop_on_sigterm)."""

    def __init__(self):
        self.stopping = False
        self.running: set[StageProcess] = set()

    def set(self) -> None:
        self.stopping = True

    def clear(self) -> None:
        self.stopping = False

    def is_set(self) -> bool:
        return self.stopping


STOPPING = StopFlag()


def stop_on_sigterm(signum=None, frame=None) -> None:
    """The local launcher's SIGTERM handler (`kill` of reproduce.py, which, unlike Ctrl-C's SIGINT, reaches no
    stage): SIGTERM the running stages (training saves last.pt) and start nothing more, so the grid ends as
    'interrupted' and a rerun of the same command continues."""
    STOPPING.set()
    for process in list(STOPPING.running):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def _in_slurm_job() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def _survive_own_requeue() -> None:
    """Requeueing a job SIGTERMs all its processes, the `scontrol requeue` that asked for it included: when
    scontrol is slow to exit (a busy machine) it dies, and submitit takes that for a failed requeue and writes an
    error as the chain's result. Ignored signals are inherited, so ignoring SIGTERM here lets the scontrol
    started next finish; this process ends right after anyway (submitit exits, Slurm kills what is left)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _end_interrupted_attempt() -> None:
    """A stage of this Slurm job was stopped by SIGTERM: end this attempt without a result, so the reproduce.py
    waiting for it follows the job to its next attempt (or sees it end).

    When Slurm sent the SIGTERM because it is ending the job (`scontrol requeue`, a pre-emption that requeues,
    scancel, the time limit), the job is COMPLETING and Slurm decides what follows. When the job is still RUNNING
    (a pre-emption's notice ahead of its GraceTime, or a SIGTERM sent by hand), the chain requeues itself, as
    submitit does on its own signal; a cancelled job is never requeued."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # submitit's handler must not requeue a second time
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]
    try:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        state = ""
    if state == "RUNNING":
        _survive_own_requeue()
        requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        state = f"RUNNING, requeued: {(requeue.stdout + requeue.stderr).strip() or 'ok'}"
    print(f"a stage was stopped by SIGTERM; ending this attempt of job {job_id} ({state or 'state unknown'})",
          file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def exclusive(path: Path):
    """A non-blocking exclusive flock on `path`; yields whether it was acquired (released on exit or death)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def blocked(commands: list[Command]) -> bool:
    """Commands run as one task (a chain, or a group stage) that failed, were interrupted or left stages unreached
    (a skipped group stage): what waits for them does not run."""
    return any(c.status in ("failed", "interrupted", "pending") for c in commands)


def run_command(command: Command, chain: Chain | None = None) -> None:
    if command.is_done():  # done before this grid began, or by an earlier attempt of this chain (requeued)
        finished = (command.done_dir / DONE_FILE).stat().st_mtime
        command.status = "done" if chain is not None and finished >= chain.since else "skipped"
        return
    command.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(command.log, "w") as log:
        log.write(f"$ {command.shell()}\n")
        log.flush()
        with DEVICES.placed() as env:
            returncode = _run_stage(command, chain, {**(chain.env if chain is not None else {}), **env})
    command.seconds = time.perf_counter() - started
    if returncode == 0:
        command.status = "done"
    elif returncode in (EXIT_INTERRUPTED, -signal.SIGTERM):
        command.status = "interrupted"
    else:
        command.status = "failed"


def _run_stage(command: Command, chain: Chain | None, env: dict[str, str]) -> int:
    """Fork the stage (its device in `env`), follow it as the stop flag and Slurm's checkpoint need; its exit status.
    In a Slurm job the time-limit signal (USR2) reaches every process of the job: the stage ignores it (as its
    server does, Chain.__call__) and is stopped by Chain.checkpoint with SIGTERM instead, which it handles."""
    process = StageProcess(command.argv, ROOT, command.log, threads=THREADS.threads(), env=env)
    if chain is not None:
        RUNNING[chain.label] = process
    STOPPING.running.add(process)
    if STOPPING.is_set():  # SIGTERM came while it was starting
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait()
    except BaseException:  # submitit ending this attempt for a requeue, or Ctrl-C: let the stage save first
        _stop(process)
        raise
    finally:
        STOPPING.running.discard(process)
        if chain is not None:
            RUNNING.pop(chain.label, None)


def _stop(process: StageProcess, grace_s: float = 60.0) -> None:
    """SIGTERM the stage (training saves last.pt) and wait for it; SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


