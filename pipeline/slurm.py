"""The Slurm launcher (through submitit): a grid's chains as one job array, followed to their end through
requeues, or submitit's local executor; then the group stages.

A chain is submitted as it is (submitit pickles it, by reference to pipeline.commands), so its `checkpoint` runs
at Slurm's time-limit or pre-emption signal. The jobs run with the project root on PYTHONPATH, wherever
reproduce.py was started from.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

from tqdm import tqdm

from pipeline.commands import ROOT, Chain, Command, run_command
from utils.errors import ToolkitError


def launch(chains: list[Chain], args) -> list[Chain]:
    """Run the chains on Slurm or submitit's local executor; returns them with their statuses filled in.

    On Slurm the chains go out as one job array and this waits until every one has finished, following
    requeues (time limit, pre-emption), so what comes after (group stages, averaging) sees finished chains."""
    if not chains:
        return []
    import submitit

    # the jobs unpickle chains of pipeline.commands: import it from the project, wherever this was started
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    folder = Path(args.workdir) / "slurm_logs"
    if args.launcher == "submitit-local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=args.time)
        jobs = [executor.submit(chain) for chain in chains]
        print(f"submitted {len(jobs)} chain(s); logs in {folder}")
        return [_result(job, chain) for job, chain in zip(jobs, tqdm(chains, desc="chains", unit="chain"))]
    if shutil.which("sbatch") is None:
        raise ToolkitError("--launcher slurm needs Slurm's sbatch, which is not on PATH here; to run the same "
                           "chains on this machine use --launcher submitit-local (or --launcher local)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=args.max_timeouts)
    delay = args.signal_delay if args.signal_delay is not None else min(90, max(5, args.time * 6))
    params = {"timeout_min": args.time, "gpus_per_node": args.gpus_per_task or None,
              "slurm_partition": args.partition, "slurm_mem": f"{args.mem}GB" if args.mem else None,
              "slurm_signal_delay_s": delay, "slurm_array_parallelism": 256}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = _submit_array(executor, chains)
    print(f"submitted {len(jobs)} chain(s) as Slurm job {jobs[0].job_id.split('_')[0]}; logs in {folder}",
          flush=True)
    return _wait_for_slurm(jobs, chains)


def _submit_array(executor, chains: list[Chain]) -> list:
    """One job array of the Chain objects themselves (checkpointable); Slurm's refusal becomes a ToolkitError."""
    from submitit.core.utils import FailedJobError

    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal), executor.batch():  # submitit prints sbatch's errors to stderr
            jobs = [executor.submit(chain) for chain in chains]
    except FailedJobError as err:
        lines = [line.strip() for line in (str(err) or refusal.getvalue()).splitlines() if line.strip()]
        reason = "; ".join(line.removeprefix("sbatch: error: ") for line in lines) or "no reason given"
        raise ToolkitError(f"Slurm refused the job array: {reason}; {_flag_to_change(reason)}") from None
    return jobs


def _flag_to_change(reason: str) -> str:
    """Which reproduce.py flag to change for sbatch's refusal."""
    text = reason.lower()
    for words, advice in ((("memory",), "ask for less with --mem GB (or leave --mem out: the cluster's default)"),
                          (("time limit",), "lower --time (minutes) to the partition's limit"),
                          (("partition",), "pick an existing --partition (see sinfo)"),
                          (("gres", "gpu"), "change --gpus-per-task to what the nodes have"),
                          (("node configuration", "cpu"),
                           "lower --mem, --gpus-per-task or --time, or choose another --partition")):
        if any(word in text for word in words):
            return advice
    return "check --partition, --mem, --time and --gpus-per-task against sinfo"


# Slurm job states after which no attempt follows (squeue); the others (PENDING, RUNNING, REQUEUED, ...) go on.
_SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT"}
_SLURM_INTERRUPTED = {"CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "DEADLINE"}


def _wait_for_slurm(jobs: list, chains: list[Chain], poll_s: float = 1.0, squeue_s: float = 10.0) -> list[Chain]:
    """Wait for every job: its result file (written once, by the attempt that finishes the chain), or squeue
    saying twice in a row that it ended without one (cancelled, timed out, killed; twice, so that a requeue's
    passing state is not taken for the end). Works without Slurm accounting (sacct)."""
    out = list(chains)
    waiting = dict(enumerate(jobs))
    ended_before: set[int] = set()
    last_squeue = float("-inf")
    with tqdm(total=len(jobs), desc="chains", unit="chain", dynamic_ncols=True) as bar:
        while waiting:
            states = None
            if time.monotonic() - last_squeue > squeue_s:
                states = _squeue_states({job.job_id.split("_")[0] for job in waiting.values()})
                last_squeue = time.monotonic()
            for index, job in list(waiting.items()):
                ended = None  # the state it ended in, once squeue said so twice
                if states is not None:
                    state = states.get(job.job_id, "GONE")
                    if state not in _SLURM_ENDED and state != "GONE":
                        ended_before.discard(index)
                    elif index in ended_before:
                        ended = state
                    else:
                        ended_before.add(index)
                if job.paths.result_pickle.exists() or ended is not None:
                    out[index] = _result(job, chains[index], ended)
                    del waiting[index]
                    bar.update(1)
            if waiting:
                time.sleep(poll_s)
    return out


def _squeue_states(array_ids: set[str]) -> dict[str, str] | None:
    """{job id (array tasks as A_T): state} for the given jobs; None when squeue does not answer."""
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
                status, why = "interrupted", "reached --time more than --max-timeouts times"
            else:
                status, why = "failed", "raised an error"
        except UncompletedJobError:
            pass
    if status is None:
        status = "interrupted" if ended in _SLURM_INTERRUPTED else "failed"
        why = f"ended ({ended}) without a result" if ended not in (None, "GONE") else "ended without a result"
    for command in chain.commands:
        if command.status == "pending" and not command.is_done():
            command.status = status
            break
    print(f"{status.upper()} chain {chain.label}: job {job.job_id} {why}; see {job.paths.stderr}", flush=True)
    return chain




def run_group_stages(chains: list[Chain], group_cmds: list[Command]) -> None:
    """After Slurm's chains: each group stage in order, skipped when a chain or stage of its groups failed."""
    failed_groups = {c.lock.parents[2] for c in chains
                     if any(x.status in ("failed", "interrupted") for x in c.commands)}
    for command in group_cmds:  # a group stage needs every seed of its group, its extraction the group stage
        if command.group not in failed_groups and not failed_groups.intersection(command.needs):
            run_command(command)
            if command.status in ("failed", "interrupted"):
                failed_groups.add(command.group)


