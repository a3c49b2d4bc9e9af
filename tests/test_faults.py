"""Fault injection: a measurement stage killed part-way (SIGKILL) leaves no partial file under a final name, and
its rerun completes; sampling stages are deterministic for a given seed."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import decompose
import train_classifier
from utils.io import load_json, load_npz
from utils.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--model-name", "resnet20", "--traindata", "digits", "--device", "cpu", "--width", "0.25"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("faults")
    train_classifier.main([*RUN, "--epochs", "1", "--no-progress", "--workdir", str(workdir)])
    decompose.main(["indices", *RUN[:-2], "--workdir", str(workdir), "-k", "3"])
    return workdir


def assert_no_partial_files(folder: Path) -> None:
    """Every file under a final name parses completely."""
    for path in folder.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            load_json(path)
        elif path.suffix == ".npz":
            load_npz(path)


# (stage command, its output folder relative to the run)
STAGES = [(["decompose.py", "finetune", "-k", "3", "--epochs", "4"], "decompose/finetune"),
          (["analyzing.py", "--ratios", "4", "--num_grams", "200", "--num_stability", "100"], "analysis")]


@pytest.mark.parametrize("command, folder", STAGES, ids=[s[1] for s in STAGES])
def test_killed_stage_reruns_to_completion(workdir, command, folder):
    argv = [sys.executable, *command, *RUN[:-2], "--workdir", str(workdir)]
    out = RunDir.of(workdir, "digits", "resnet20", 0).stage(folder)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)  # past start-up, inside the computation
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "_done.json").exists()
    if out.exists():
        assert_no_partial_files(out)
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (out / "_done.json").is_file()
    assert_no_partial_files(out)


def test_essentiality_is_deterministic_for_a_seed(workdir):
    args = ["essential", *RUN[:-2], "--workdir", str(workdir), "-k", "3"]
    path = RunDir.of(workdir, "digits", "resnet20", 0).stage("decompose/essential") / "essential.json"
    decompose.main(args)
    first = json.loads(path.read_text())
    decompose.main([*args, "--force"])
    assert json.loads(path.read_text()) == first
    decompose.main([*args, "--force", "--noise-seed", "1"])
    counts = json.loads(path.read_text())["3"]
    assert np.sum(counts["n"]) == 360
