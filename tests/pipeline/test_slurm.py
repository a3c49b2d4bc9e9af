"""reproduce.py --launcher slurm against a real Slurm cluster: time limits, requeue mid-training, cancellation,
impossible requests.

Start a one-node cluster with `scripts/slurm_cluster.sh start` (root, Debian). Marked `slurm`; skipped with
the reason where `sinfo` does not answer, except under DIMTOOLKIT_REQUIRE_SLURM=1 (.ci/run), where a missing
cluster fails. Each chain is one tiny training (LeNet at width 0.25 on digits, one thread); Slurm's smallest
time limit is a minute and it checks time limits every 30 s, so these tests take a few minutes.
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from utils.io import load_torch
from utils.rundir import RunDir

GRID = ["--paper", "004", "--models", "lenet", "--width", "0.25", "--traindata", "digits", "--stages", "train",
        "--seeds", "0", "--gaussian_corruption_std", "0", "--device", "cpu",
        "--cpus-per-task", "1"]  # one chain: the uncorrupted run
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the jobs inherit it: lighter, and the same as the local reference
REQUEUE_EPOCHS = 40


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm here (sinfo/sbatch not on PATH); start one with scripts/slurm_cluster.sh start"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer within 30 s"
    states = result.stdout.split()
    if result.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"sinfo does not answer with a usable node: {(result.stderr or result.stdout).strip()[:200]}"
    return None


_PROBLEM = _cluster_problem()
if _PROBLEM and os.environ.get("DIMTOOLKIT_REQUIRE_SLURM") == "1":
    raise RuntimeError(f"DIMTOOLKIT_REQUIRE_SLURM=1 but {_PROBLEM}")
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]


def reproduce(workdir: Path, *flags: str, timeout: float = 900, grid: list[str] = GRID) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "reproduce.py", *grid, "--workdir", str(workdir), *flags], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def start_reproduce(workdir: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "reproduce.py", *GRID, "--workdir", str(workdir), "--launcher", "slurm",
                             *flags], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# seed002's demo at its smallest: two MLPs of one epoch, then rainbow, their extraction and averaging
RAINBOW = ["--paper", "002", "--models", "rainbow_mlp", "--seeds", "0", "1", "--epochs", "1", "--device", "cpu",
           "--launcher", "slurm", "--cpus-per-task", "1"]


def recorded_jobs(workdir: Path) -> dict[str, str]:
    return json.loads((workdir / "slurm_logs" / "jobs.json").read_text())


def slurm_states(job_ids) -> dict[str, str]:
    """{job id: state} of the jobs Slurm still knows (squeue keeps ended ones MinJobAge = 600 s)."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    states = dict(line.split()[:2] for line in out.splitlines())
    return {job: states.get(job, "GONE") for job in job_ids}


@pytest.fixture(scope="module")
def detached(tmp_path_factory):
    """The rainbow grid submitted with --detach (its jobs run while the next tests do): the workdir, reproduce.py's
    output and its seconds."""
    workdir = tmp_path_factory.mktemp("detached")
    started = time.monotonic()
    result = reproduce(workdir, *RAINBOW, "--detach", timeout=120, grid=[])
    return workdir, result, time.monotonic() - started


def test_detach_submits_every_stage_as_a_slurm_job_and_exits(detached):
    """issue 27: the chains, rainbow, the extraction after it and averaging are all Slurm jobs, each waiting for
    the ones it needs (afterok; averaging afterany), and reproduce.py exits without waiting for any."""
    workdir, result, seconds = detached
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = recorded_jobs(workdir)
    assert sorted(jobs) == ["average .", "digits/rainbow_mlp/rnd0", "digits/rainbow_mlp/rnd1",
                            "extract digits/rainbow_mlp", "rainbow digits/rainbow_mlp"]
    assert "5 jobs, 0 done, 0 queued or running, 5 submitted now" in result.stdout
    assert seconds < 60 and "GONE" not in slurm_states(jobs.values()).values()
    script = {label: (workdir / "slurm_logs" / f"{job.split('_')[0]}_submission.sh").read_text()
              for label, job in jobs.items()}
    chains = f"{jobs['digits/rainbow_mlp/rnd0']}:{jobs['digits/rainbow_mlp/rnd1']}"
    assert f"#SBATCH --dependency=afterok:{chains}\n" in script["rainbow digits/rainbow_mlp"]
    assert f"--dependency=afterok:{chains}:{jobs['rainbow digits/rainbow_mlp']}\n" in \
        script["extract digits/rainbow_mlp"]
    assert f"--dependency=afterany:{chains}:{jobs['rainbow digits/rainbow_mlp']}:" \
           f"{jobs['extract digits/rainbow_mlp']}\n" in script["average ."]
    assert all("#SBATCH --cpus-per-task=1\n" in text for text in script.values())
    assert "dependency" not in script["digits/rainbow_mlp/rnd0"]


def test_a_failing_chain_skips_its_group_stage_and_says_why(tmp_path, detached):
    """One chain's training fails (a corrupt last.pt to resume from): Slurm never starts rainbow, which needs it,
    and reproduce.py names the chain and its log; the other chain completes. Once repaired, a detached rerun
    resubmits the failed chain and rainbow, saying how their jobs ended, and keeps the done chain."""
    last = RunDir.of(tmp_path, "digits", "rainbow_mlp", 1).last
    last.parent.mkdir(parents=True)
    last.write_text("not a checkpoint")
    result = reproduce(tmp_path, *RAINBOW, "--stages", "train", "rainbow", timeout=600, grid=[])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 done, 0 skipped, 1 failed, 0 interrupted, 0 left to another running process, 1 not reached" \
        in result.stdout
    log = RunDir.of(tmp_path, "digits", "rainbow_mlp", 1).root / "logs" / "train.log"
    assert (f"SKIPPED rainbow digits/rainbow_mlp: it needs digits/rainbow_mlp/rnd1, which did not complete: its "
            f"train failed (log: {log})") in result.stdout
    jobs = recorded_jobs(tmp_path)
    assert slurm_states([jobs["rainbow digits/rainbow_mlp"]]) == {jobs["rainbow digits/rainbow_mlp"]: "CANCELLED"}
    assert not (tmp_path / "digits" / "rainbow_mlp" / "rainbow").exists()
    last.unlink()   # repaired: a detached rerun submits the failed chain and the rainbow it skipped, nothing else
    again = reproduce(tmp_path, *RAINBOW, "--stages", "train", "rainbow", "--detach", timeout=120, grid=[])
    now = recorded_jobs(tmp_path)
    subprocess.run(["scancel", now["digits/rainbow_mlp/rnd1"].split("_")[0], now["rainbow digits/rainbow_mlp"]],
                   timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 jobs, 1 done, 0 queued or running, 2 submitted now" in again.stdout
    assert f"resubmitting digits/rainbow_mlp/rnd1: job {jobs['digits/rainbow_mlp/rnd1']} ended FAILED" in again.stdout
    assert f"resubmitting rainbow digits/rainbow_mlp: job {jobs['rainbow digits/rainbow_mlp']} ended CANCELLED" \
        in again.stdout
    assert now["digits/rainbow_mlp/rnd0"] == jobs["digits/rainbow_mlp/rnd0"]
    assert now["digits/rainbow_mlp/rnd1"] != jobs["digits/rainbow_mlp/rnd1"]


def logged_epochs(workdir: Path) -> list[int]:
    log = RunDir.of(workdir, "digits", "lenet", 0).train_log
    if not log.is_file():
        return []
    with open(log) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def wait_for_epochs(workdir: Path, n: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(logged_epochs(workdir)) < n:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"no {n} epochs after {timeout} s"
        time.sleep(0.2)


def job_id(workdir: Path) -> str:
    (pickle,) = (workdir / "slurm_logs").glob("*_submitted.pkl")
    return pickle.name.removesuffix("_submitted.pkl")


def attempts(workdir: Path) -> int:
    """How many times Slurm started the chain (submitit's log, appended to by every attempt)."""
    return sum(path.read_text().count("Starting with JobEnvironment")
               for path in (workdir / "slurm_logs").glob("*_log.out"))


def final_weights(workdir: Path, epochs: int) -> dict:
    return load_torch(RunDir.of(workdir, "digits", "lenet", 0).epoch_checkpoint(epochs))["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted local run of the requeue test's chain: its final weights and seconds per epoch."""
    workdir = tmp_path_factory.mktemp("reference")
    result = reproduce(workdir, "--epochs", str(REQUEUE_EPOCHS), "--launcher", "local", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(RunDir.of(workdir, "digits", "lenet", 0).train_log) as handle:
        seconds = sorted(float(row["seconds"]) for row in csv.DictReader(handle))
    return final_weights(workdir, REQUEUE_EPOCHS), seconds[len(seconds) // 2]


def test_a_grid_longer_than_the_time_limit_reaches_its_report_through_requeues(tmp_path, reference):
    """issue 27: --time 1 with two minutes of training, then a measurement, the extraction and averaging (its own
    job): Slurm's warning signal makes the chain save and requeue, every epoch is trained once, and the grid reaches
    its report with every stage done, through more time limits than --max-timeouts (which counts only attempts
    without progress), and no finished stage's log holds a traceback (the stage server and its resource tracker
    outlive the warning signal)."""
    # About two minutes of training at the reference's speed: a first attempt holds less than a minute (Slurm warns
    # 24-54 s into it, and starting the job takes some of that), so at least two time limits, usually three.
    epochs = min(600, max(180, math.ceil(120 / reference[1])))
    grid = [*GRID[:GRID.index("--stages")], "--stages", "train", "stability", "extract", "average",
            *GRID[GRID.index("--stages") + 2:]]
    result = reproduce(tmp_path, "--epochs", str(epochs), "--launcher", "slurm", "--time", "1",
                       "--max-timeouts", "1", timeout=1200, grid=grid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 done, 0 skipped, 0 failed, 0 interrupted, 0 left to another running process, 0 not reached" \
        in result.stdout
    assert (tmp_path / "report" / "report.md").is_file()
    log = "".join(path.read_text() for path in (tmp_path / "slurm_logs").glob("*_log.out"))
    assert attempts(tmp_path) >= 4, f"{epochs} epochs finished within two attempts: the machine got faster"
    assert "this job is timed-out" in log and "Requeued job" in log
    assert logged_epochs(tmp_path) == list(range(1, epochs + 1))
    logs = sorted(tmp_path.rglob("*.log"))   # train, stability, extract, averaging
    assert len(logs) == 4 and not [path for path in logs if "Traceback" in path.read_text()]


def test_requeue_mid_training_completes_with_the_weights_of_an_uninterrupted_run(tmp_path, reference):
    """`scontrol requeue` (what a pre-emption does): the stage saves on SIGTERM, the attempt ends without a result,
    reproduce.py follows the requeued attempt, which resumes from last.pt to bit-identical weights."""
    process = start_reproduce(tmp_path, "--epochs", str(REQUEUE_EPOCHS))
    try:
        wait_for_epochs(tmp_path, 3, process)
        subprocess.run(["scontrol", "requeue", job_id(tmp_path)], check=True, timeout=60)
        out, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, out
    assert "1 done, 0 skipped, 0 failed, 0 interrupted" in out
    assert attempts(tmp_path) == 2
    assert logged_epochs(tmp_path) == list(range(1, REQUEUE_EPOCHS + 1))
    weights, expected = final_weights(tmp_path, REQUEUE_EPOCHS), reference[0]
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_a_cancelled_chain_is_reported_interrupted_without_waiting_forever(tmp_path):
    process = start_reproduce(tmp_path, "--epochs", str(REQUEUE_EPOCHS))
    try:
        wait_for_epochs(tmp_path, 1, process)
        subprocess.run(["scancel", job_id(tmp_path)], check=True, timeout=60)
        out, _ = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 1, out
    assert "0 failed, 1 interrupted" in out and "INTERRUPTED chain digits/lenet/rnd0" in out and "CANCELLED" in out
    assert len(logged_epochs(tmp_path)) < REQUEUE_EPOCHS


def test_an_impossible_request_is_one_line_naming_the_flag(tmp_path):
    result = reproduce(tmp_path, "--epochs", "1", "--launcher", "slurm", "--mem", "999", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--mem" in result.stderr
    assert "Traceback" not in result.stderr and not list((tmp_path / "slurm_logs").glob("*_submitted.pkl"))


def test_a_detached_grid_rerun_after_its_jobs_end_reports_done_and_submits_nothing(detached):
    """Last: the detached grid's jobs ran while the tests above did."""
    workdir, _, _ = detached
    jobs = recorded_jobs(workdir)
    deadline = time.monotonic() + 600
    while set(slurm_states(jobs.values()).values()) - {"COMPLETED", "FAILED", "CANCELLED", "GONE"}:
        assert time.monotonic() < deadline, slurm_states(jobs.values())
        time.sleep(2)
    assert set(slurm_states(jobs.values()).values()) == {"COMPLETED"}
    logged = subprocess.run(["sacct", "--completion", "-n", "-P", "-o", "JobID,State"], capture_output=True,
                            text=True, timeout=60).stdout   # the job-completion log of slurm_cluster.sh
    for label in ("rainbow digits/rainbow_mlp", "extract digits/rainbow_mlp", "average ."):
        assert f"{jobs[label]}|COMPLETED" in logged.splitlines()
    submitted = sorted((workdir / "slurm_logs").glob("*_submitted.pkl"))
    result = reproduce(workdir, *RAINBOW, "--detach", timeout=120, grid=[])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 jobs, 5 done, 0 queued or running, 0 submitted now" in result.stdout
    assert "nothing submitted: every job of the grid is done" in result.stdout
    assert sorted((workdir / "slurm_logs").glob("*_submitted.pkl")) == submitted
    assert recorded_jobs(workdir) == jobs
    report = (workdir / "report" / "report.md").read_text()
    assert "rainbow" in report.lower()
