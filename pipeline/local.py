"""The local launcher: a grid's chains and group stages on worker threads, each stage a forked process."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from pipeline.commands import (
    DEVICES,
    STOPPING,
    THREADS,
    Chain,
    Command,
    DevicePool,
    blocked,
    run_command,
    stop_on_sigterm,
)
from pipeline.plan import group_waits, run_group
from utils.cpus import allotted_cpus


def place_devices(launcher: str, device: str, jobs: int | None, jobs_per_gpu: int) -> int:
    """A grid on this machine (local, submitit-local) that computes on CUDA gives each running stage its own GPU
    (pipeline.commands.DEVICES); returns the workers: `jobs`, else as many as GPU slots, else (on the CPU) 2 at
    most. On Slurm each job has its own allocation: nothing is placed."""
    devices = DevicePool.visible() if launcher != "slurm" and device != "cpu" else []
    DEVICES.configure(devices, jobs_per_gpu)
    if jobs is not None:
        return jobs
    return len(devices) * jobs_per_gpu if devices else min(2, allotted_cpus())


@dataclass
class _Task:
    """A chain, or a group stage with the tasks it waits for (run_local)."""

    chain: Chain | None
    command: Command | None = None
    needs: list[_Task] = field(default_factory=list)
    finished: bool = False

    def commands(self) -> list[Command]:
        return self.chain.commands if self.chain is not None else [self.command]

    def blocked(self) -> bool:
        """A finished task that failed, was interrupted, or left stages unreached (a skipped group stage)."""
        return blocked(self.commands())


def run_local(chains: list[Chain], group_cmds: list[Command], jobs: int) -> None:
    """The local launcher: the chains and the group stages on `jobs` worker threads.

    A group stage (rainbow, its runs' extraction) waits for every chain and earlier group stage of its group and
    of the groups it needs, and is skipped when one of them failed; once ready it goes ahead of the chains not
    yet started. The chains of groups with group stages start first, so those stages overlap the other chains."""
    with_group_stages = {c.group for c in group_cmds} | {g for c in group_cmds for g in c.needs}
    pending = [_Task(chain) for chain in sorted(chains, key=lambda c: run_group(c) not in with_group_stages)]
    task_of = {id(task.chain): task for task in pending}
    for command, waits in zip(group_cmds, group_waits(chains, group_cmds)):
        task = _Task(None, command, [task_of[id(waited)] for waited in waits])
        task_of[id(command)] = task
        pending.append(task)
    ready = threading.Condition()
    bar = tqdm(total=sum(len(t.commands()) for t in pending), desc="grid", unit="stage", dynamic_ncols=True)

    def next_task() -> _Task | None:
        with ready:
            while pending:
                runnable = [t for t in pending if all(n.finished for n in t.needs)]
                if runnable:
                    task = min(runnable, key=lambda t: t.chain is not None)  # a ready group stage first
                    pending.remove(task)
                    return task
                ready.wait()
            return None

    def work() -> None:
        while (task := next_task()) is not None:
            THREADS.change(+1)
            try:
                if task.chain is not None:
                    task.chain(bar)
                else:
                    if STOPPING.is_set():
                        task.command.status = "interrupted"
                    elif not any(n.blocked() for n in task.needs):  # else left pending: not reached
                        run_command(task.command)
                    bar.update(1)
            finally:
                THREADS.change(-1)
                with ready:
                    task.finished = True
                    ready.notify_all()

    with bar, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(work) for _ in range(jobs)]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C: stop the running stages as SIGTERM does, let the workers wind down
            stop_on_sigterm()
            raise


