"""reproduce.py --launcher slurm against a real Slurm cluster: time limits, requeue mid-training, cancellation,
impossible requests.

Start a one-node cluster with `scripts/slurm_cluster.sh start` (root, Debian). Marked `slurm`; skipped with
the reason where `sinfo` does not answer, except under DIMTOOLKIT_REQUIRE_SLURM=1 (.ci/run), where a missing
cluster fails. Each chain is one tiny training (LeNet at width 0.25 on digits, one thread); Slurm's smallest
time limit is a minute and it checks time limits every 30 s, so these tests take a few minutes.
"""
import csv
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
        "--seeds", "0", "--gaussian_corruption_std", "0", "--device", "cpu"]  # one chain: the uncorrupted run
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


def reproduce(workdir: Path, *flags: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "reproduce.py", *GRID, "--workdir", str(workdir), *flags], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def start_reproduce(workdir: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "reproduce.py", *GRID, "--workdir", str(workdir), "--launcher", "slurm",
                             *flags], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


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


def test_a_chain_longer_than_the_time_limit_completes_through_requeues(tmp_path, reference):
    """--time 1 with a minute and more of training: Slurm's warning signal makes the chain save and requeue,
    every epoch is trained once, and the grid completes."""
    # About a minute of training at the reference's speed: more than a first attempt holds (Slurm warns 24-54 s
    # into it, and starting the job takes some of that), so at least one requeue, usually exactly one.
    epochs = min(300, max(90, math.ceil(60 / reference[1])))
    result = reproduce(tmp_path, "--epochs", str(epochs), "--launcher", "slurm", "--time", "1",
                       "--max-timeouts", "10", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 done, 0 skipped, 0 failed, 0 interrupted" in result.stdout
    log = "".join(path.read_text() for path in (tmp_path / "slurm_logs").glob("*_log.out"))
    assert attempts(tmp_path) >= 2, f"{epochs} epochs finished within one attempt: the machine got faster"
    assert "this job is timed-out" in log and "Requeued job" in log
    assert logged_epochs(tmp_path) == list(range(1, epochs + 1))


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
