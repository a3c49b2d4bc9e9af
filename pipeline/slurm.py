"""The Slurm launcher (through submitit): a grid's chains as one job array, each group stage and averaging as a
job depending on the jobs it needs, followed to their end through requeues (or left to run: --detach); and
submitit's local executor, its chains placed on devices as the local launcher's, then the group stages here.

A chain is submitted as it is (submitit pickles it, by reference to pipeline.commands), so its `checkpoint` runs
at Slurm's time-limit or pre-emption signal; a group stage or averaging is submitted as a chain of its commands.
The jobs run with the project root on PYTHONPATH, wherever reproduce.py was started from.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.commands import DEVICES, ROOT, Chain, Command, blocked, run_command
from pipeline.plan import group_waits, run_group
from utils.errors import ToolkitError
from utils.io import load_json, save_json
from utils.rundir import DONE_FILE


@dataclass(eq=False)
class Job:
    """One Slurm job of a grid: a run's chain, one stage of one group (rainbow; or the extraction of the group's
    runs that follows it, one job for all of them), or a workdir's averaging, with the jobs it needs first.

    A job starts once its needs are done (`afterok`), and Slurm cancels it when one of them fails
    (`--kill-on-invalid-dep`); averaging needs them ended (`afterany`), done or not, as the local launcher runs it
    last whatever failed."""

    chain: Chain
    needs: list[Job] = field(default_factory=list)
    any_end: bool = False
    job_id: str | None = None  # the Slurm job that runs or ran it (this grid's, or an earlier one's still in flight)
    state: str = ""            # done | submitted | the in-flight job's Slurm state

    @property
    def label(self) -> str:
        return self.chain.label

    def blocked(self) -> bool:
        """It failed, was interrupted or skipped (left stages unreached)."""
        return blocked(self.chain.commands)

    def failure(self) -> str:
        """Why it did not complete: its stage that failed or was interrupted, with the log."""
        bad = next((c for c in self.chain.commands if c.status in ("failed", "interrupted")), None)
        return f"its {bad.stage} {bad.status} (log: {bad.log})" if bad else "it was skipped"

    def is_done(self) -> bool:
        """Every stage done (averaging: its report newer than every done mark of the stages it averages)."""
        if not self.any_end:
            return all(c.is_done() for c in self.chain.commands)
        report = self.chain.commands[0].log.parent / "report.md"
        marks = [c.done_dir / DONE_FILE for need in self.needs for c in need.chain.commands]
        return report.is_file() and all(not mark.is_file() or mark.stat().st_mtime <= report.stat().st_mtime
                                         for mark in marks)


def grid_jobs(chains: list[Chain], group_cmds: list[Command], final: list[Command], root: Path) -> list[Job]:
    """The grid's Slurm jobs in submission order, each with the jobs it needs: a group stage what the local
    launcher makes it wait for (pipeline.plan.group_waits), averaging every job of its workdir."""
    jobs = [Job(chain) for chain in chains]
    job_of = {id(chain): job for chain, job in zip(chains, jobs)}
    for command, waits in zip(group_cmds, group_waits(chains, group_cmds)):
        last = jobs[-1]
        same = last.chain.commands[-1]
        if (last.chain not in chains and same.stage == command.stage and same.group == command.group
                and same.needs == command.needs):   # one job runs a group's extraction of every seed
            last.chain.commands.append(command)
            job_of[id(command)] = last
            continue
        needs = list(dict.fromkeys(job_of[id(waited)] for waited in waits))
        job = Job(Chain(f"{command.stage} {_relative(command.group, root)}", command.log.with_name(".lock"),
                        [command]), needs)
        jobs.append(job)
        job_of[id(command)] = job
    for command in final:
        workdir = Path(command.argv[command.argv.index("--workdir") + 1])
        needs = [job for job in jobs if workdir in job.chain.commands[0].log.parents]
        jobs.append(Job(Chain(f"average {_relative(workdir, root)}", command.log.with_name(".lock"), [command]),
                        needs, any_end=True))
    return jobs


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def launch_local(chains: list[Chain], args) -> list[Chain]:
    """submitit's local executor: at most --jobs chains at once, each with the device pipeline.commands.DEVICES
    places for it (CUDA_VISIBLE_DEVICES in its stages' environment), as the local launcher places its stages;
    returns the chains with their statuses filled in."""
    if not chains:
        return []
    import submitit

    _project_on_pythonpath()
    folder = Path(args.workdir) / "slurm_logs"
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=args.time)
    submitting = threading.Lock()

    def run(chain: Chain) -> Chain:
        with DEVICES.placed() as env:
            chain.env = env
            with submitting:
                job = executor.submit(chain)
            return _result(job, chain)

    print(f"running {len(chains)} chain(s) through submitit's local executor, {args.jobs} at once; logs in {folder}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(tqdm(pool.map(run, chains), total=len(chains), desc="chains", unit="chain"))


def run_on_slurm(chains: list[Chain], group_cmds: list[Command], final: list[Command], args) -> list[Command]:
    """The whole grid as Slurm jobs (issue 27): the chains not yet done as one job array, then each group stage
    and averaging as a job depending on the jobs it needs; jobs still queued or running from an earlier
    reproduce.py are kept, done ones skipped. With --detach this returns once all is submitted, after printing
    the grid's state; else it waits for every job, following requeues, and reports what was skipped and why.
    Returns every command with its status."""
    if shutil.which("sbatch") is None:
        raise ToolkitError("--launcher slurm needs Slurm's sbatch, which is not on PATH here; to run the same "
                           "chains on this machine use --launcher submitit-local (or --launcher local)")
    import submitit

    _project_on_pythonpath()
    folder = Path(args.workdir) / "slurm_logs"
    jobs = grid_jobs(chains, group_cmds, final, Path(args.workdir))
    record = folder / "jobs.json"
    known = load_json(record) if record.is_file() else {}
    states = _squeue_states({known[job.label].split("_")[0] for job in jobs if job.label in known})
    if states is None:   # resubmitting jobs that may still be queued would run them twice
        raise ToolkitError("squeue does not answer, so which of this grid's jobs are still queued is unknown; "
                           "run the same command again when it does")
    ended = _sacct_states([known[job.label] for job in jobs if job.label in known
                           and states.get(known[job.label], "GONE") in _SLURM_ENDED | {"GONE"}])
    missing = []
    for job in jobs:
        previous = known.get(job.label)
        state = states.get(previous, "GONE") if previous else None
        unfinished = [need for need in job.needs if need.state != "done"]
        if not (job.any_end and unfinished) and job.is_done():
            job.state = "done"
        elif state is not None and state not in _SLURM_ENDED | {"GONE"}:
            job.job_id, job.state = previous, state
        else:
            job.state = "submitted"
            missing.append(job)
            if previous:
                print(f"resubmitting {job.label}: job {previous} ended "
                      f"{ended.get(previous) or (state if state != 'GONE' else 'unknown to Slurm now')} "
                      "without finishing it", flush=True)
    for job in missing:   # each chain counts its time limits without progress (Chain.checkpoint); submitit not
        job.chain.max_stalls = args.max_timeouts
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=_UNCOUNTED_TIMEOUTS)
    delay = args.signal_delay if args.signal_delay is not None else min(90, max(5, args.time * 6))
    params = {"timeout_min": args.time, "gpus_per_node": args.gpus_per_task or None,
              "cpus_per_task": args.cpus_per_task, "slurm_partition": args.partition,
              "slurm_mem": f"{args.mem}GB" if args.mem else None, "slurm_signal_delay_s": delay,
              "slurm_array_parallelism": 256}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    submitted = _submit(executor, [job for job in missing if not job.needs])
    for job in (job for job in missing if job.needs):
        waits = [need.job_id for need in job.needs if need.job_id is not None]
        dependency = {"dependency": f"{'afterany' if job.any_end else 'afterok'}:{':'.join(waits)}",
                      "kill-on-invalid-dep": "yes"} if waits else {}
        executor.update_parameters(slurm_additional_parameters=dependency)
        submitted += _submit(executor, [job])
    if missing:
        record.parent.mkdir(parents=True, exist_ok=True)
        save_json(record, {**known, **{job.label: job.job_id for job in jobs if job.job_id is not None}})
    _print_state(jobs, folder)
    if args.detach:
        return [c for job in jobs for c in job.chain.commands]
    return _follow(jobs, [*submitted, *(submitit.SlurmJob(folder, job.job_id) for job in jobs
                                        if job.state not in ("done", "submitted"))])


def _project_on_pythonpath() -> None:
    """The jobs unpickle chains of pipeline.commands: they import it from the project, wherever this was started."""
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _print_state(jobs: list[Job], folder: Path) -> None:
    """How many jobs are done, in flight (queued or running, from an earlier reproduce.py: each named with its
    state) and submitted now (their Slurm job ids)."""
    count = Counter("in flight" if job.state not in ("done", "submitted") else job.state for job in jobs)
    print(f"grid on Slurm: {len(jobs)} jobs, {count['done']} done, {count['in flight']} queued or running, "
          f"{count['submitted']} submitted now; logs in {folder}", flush=True)
    for job in jobs:
        if job.state not in ("done", "submitted"):
            print(f"  {job.label}: job {job.job_id} {job.state.lower()}", flush=True)
    if count["submitted"]:
        ids = dict.fromkeys(job.job_id.split("_")[0] for job in jobs if job.state == "submitted")
        print(f"  submitted: Slurm job(s) {', '.join(ids)}", flush=True)
    elif not count["in flight"]:
        print("nothing submitted: every job of the grid is done", flush=True)


def _follow(jobs: list[Job], waited: list) -> list[Command]:
    """Wait for the jobs submitted or in flight, then fill in every command's status: a job that did not run
    because one it needs did not complete is reported SKIPPED with that job named."""
    ends = dict(zip((job.job_id for job in waited), _wait_for_slurm(waited)))
    by_id = {job.job_id: job for job in waited}
    for job in jobs:
        if job.state == "done":
            for command in job.chain.commands:
                command.status = "skipped"
            continue
        slurm_job = by_id[job.job_id]
        blocker = next((need for need in job.needs if need.blocked()), None)
        if not job.any_end and blocker is not None and not slurm_job.paths.result_pickle.exists():
            print(f"SKIPPED {job.label}: it needs {blocker.label}, which did not complete: {blocker.failure()}",
                  flush=True)
            _settle(job.chain)
        else:
            job.chain = _result(slurm_job, job.chain, ends[job.job_id])
    return [c for job in jobs for c in job.chain.commands]


def _settle(chain: Chain) -> None:
    """The statuses of a chain whose job returned none: its stages done (by this grid or before it) per their
    done marks; the others are left pending."""
    for command in chain.commands:
        if command.status == "pending" and command.is_done():
            finished = (command.done_dir / DONE_FILE).stat().st_mtime
            command.status = "done" if finished >= chain.since else "skipped"


def _submit(executor, jobs: list[Job]) -> list:
    """Submit the jobs (several: one job array); their Slurm job ids go to `jobs`. Slurm's refusal becomes a
    ToolkitError naming the flag to change."""
    from submitit.core.utils import FailedJobError

    if not jobs:
        return []
    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal), executor.batch():  # submitit prints sbatch's errors to stderr
            submitted = [executor.submit(job.chain) for job in jobs]
    except FailedJobError as err:
        lines = [line.strip() for line in (str(err) or refusal.getvalue()).splitlines() if line.strip()]
        reason = "; ".join(line.removeprefix("sbatch: error: ") for line in lines) or "no reason given"
        raise ToolkitError(f"Slurm refused the job: {reason}; {_flag_to_change(reason)}") from None
    for job, slurm_job in zip(jobs, submitted):
        job.job_id = slurm_job.job_id
    return submitted


def _flag_to_change(reason: str) -> str:
    """Which reproduce.py flag to change for sbatch's refusal."""
    text = reason.lower()
    for words, advice in ((("memory",), "ask for less with --mem GB (or leave --mem out: the cluster's default)"),
                          (("time limit",), "lower --time (minutes) to the partition's limit"),
                          (("partition",), "pick an existing --partition (see sinfo)"),
                          (("gres", "gpu"), "change --gpus-per-task to what the nodes have"),
                          (("node configuration", "cpu"),
                           "lower --cpus-per-task, --mem, --gpus-per-task or --time, or choose another --partition")):
        if any(word in text for word in words):
            return advice
    return "check --partition, --mem, --time, --cpus-per-task and --gpus-per-task against sinfo"


# submitit's own limit on a job's time-limit requeues, out of reach: Chain.checkpoint gives a chain up after
# --max-timeouts of them in a row without progress
_UNCOUNTED_TIMEOUTS = 10 ** 6

# Slurm job states after which no attempt follows (squeue); the others (PENDING, RUNNING, REQUEUED, ...) go on.
_SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT"}
_SLURM_INTERRUPTED = {"CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "DEADLINE"}


def _wait_for_slurm(jobs: list, poll_s: float = 1.0, squeue_s: float = 10.0) -> list[str | None]:
    """Wait for every job: its result file (written once, by the attempt that finishes the chain), or squeue
    saying twice in a row that it ended without one (cancelled, timed out, killed; twice, so that a requeue's
    passing state is not taken for the end). Works without Slurm accounting (sacct). Per job: None when it left
    a result, else the state it ended in ("GONE": no longer known to squeue)."""
    out: list[str | None] = [None] * len(jobs)
    waiting = dict(enumerate(jobs))
    ended_before: set[int] = set()
    last_squeue = float("-inf")
    with tqdm(total=len(jobs), desc="jobs", unit="job", dynamic_ncols=True) as bar:
        while waiting:
            states = None
            if time.monotonic() - last_squeue > squeue_s:
                states = _squeue_states({job.job_id.split("_")[0] for job in waiting.values()})
                last_squeue = time.monotonic()
            for index, job in list(waiting.items()):
                if states is not None:
                    state = states.get(job.job_id, "GONE")
                    if state not in _SLURM_ENDED and state != "GONE":
                        ended_before.discard(index)
                    elif index in ended_before:
                        out[index] = state
                    else:
                        ended_before.add(index)
                if job.paths.result_pickle.exists() or out[index] is not None:
                    del waiting[index]
                    bar.update(1)
            if waiting:
                time.sleep(poll_s)
    return out


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: the state it ended in} from Slurm's accounting, or its job-completion log where accounting is off
    (sacct --completion); {} when neither answers."""
    if not job_ids:
        return {}
    query = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)]
    for argv in (query, [*query, "--completion"]):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if result.returncode == 0 and result.stdout.strip():
            return {line.split("|")[0]: line.split("|")[1].split()[0] for line in result.stdout.splitlines()
                    if line.count("|") >= 1 and line.split("|")[1].strip()}
    return {}


def _squeue_states(array_ids: set[str]) -> dict[str, str] | None:
    """{job id (array tasks as A_T): state} for the given jobs; None when squeue does not answer."""
    if not array_ids:
        return {}
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(sorted(array_ids))],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return {} if "invalid job id" in result.stderr.lower() else None  # every job purged, or no answer
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def _result(job, chain: Chain, ended: str | None = None) -> Chain:
    """The chain as the job returned it. When the job raised, or ended (squeue state `ended`) without a result,
    the local chain with its first unfinished stage marked interrupted (cancelled, timed out, pre-empted) or
    failed, and the job's log named."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    status = why = None
    if ended is None or job.paths.result_pickle.exists():  # (squeue said `ended` twice, 10 s apart)
        try:
            return job.result()
        except FailedJobError as err:  # the chain raised, or submitit stopped requeueing it
            if "Job not requeued" in str(err):
                status, why = "interrupted", ("reached --time more than --max-timeouts times in a row without "
                                              "finishing a stage or a training epoch")
            else:
                status, why = "failed", "raised an error"
        except UncompletedJobError:
            pass
    if status is None:
        status = "interrupted" if ended in _SLURM_INTERRUPTED else "failed"
        why = f"ended ({ended}) without a result" if ended not in (None, "GONE") else "ended without a result"
    _settle(chain)
    for command in chain.commands:
        if command.status == "pending" and not command.is_done():
            command.status = status
            break
    print(f"{status.upper()} chain {chain.label}: job {job.job_id} {why}; see {job.paths.stderr}", flush=True)
    return chain


def run_group_stages(chains: list[Chain], group_cmds: list[Command]) -> None:
    """After submitit-local's chains: each group stage in order, here, skipped when a chain or stage of its groups
    failed."""
    failed_groups = {run_group(c) for c in chains if any(x.status in ("failed", "interrupted") for x in c.commands)}
    for command in group_cmds:  # a group stage needs every seed of its group, its extraction the group stage
        if command.group not in failed_groups and not failed_groups.intersection(command.needs):
            run_command(command)
            if command.status in ("failed", "interrupted"):
                failed_groups.add(command.group)
