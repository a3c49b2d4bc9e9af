"""Shared pytest set-up: the repository root on sys.path (ROOT), one intra-op thread for the small in-process models
(thread start-up dominates their cost; scripts run as subprocesses keep torch's default), and `trained_run`: tiny
trained runs, each trained once per test session and copied into the workdir that asks for it."""
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
torch.set_num_threads(int(os.environ.get("TOOLKIT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """trained_run(workdir, model, traindata="digits", seed=0, *flags) -> RunDir of a trained run under `workdir`.

    The first request for a (model, traindata, seed, flags) trains it on the CPU into a session cache; every
    request copies the cached run folder (config, log, checkpoints) into `workdir`, so a test may change it freely.
    """
    import train_classifier
    from utils.rundir import RunDir

    cache: dict[tuple, RunDir] = {}

    def trained(workdir, model: str, traindata: str = "digits", seed: int = 0, *flags: str) -> RunDir:
        key = (model, traindata, seed, flags)
        argv = ["--model-name", model, "--traindata", traindata, "--seed", str(seed), "--no-progress", "--device",
                "cpu", *flags]
        if key not in cache:
            source = tmp_path_factory.mktemp("trained")
            assert train_classifier.main([*argv, "--workdir", str(source)]) == 0, f"training {key} failed"
            cache[key] = RunDir.from_args(train_classifier.parse_args([*argv, "--workdir", str(source)]))
        target = RunDir.from_args(train_classifier.parse_args([*argv, "--workdir", str(workdir)]))
        shutil.copytree(cache[key].root, target.root, dirs_exist_ok=True)
        return target

    return trained


@pytest.fixture(scope="session")
def stage_workdir(tmp_path_factory, trained_run):
    """A workdir holding the runs of tests/stage_commands.py (stages run on demand with its `ensure`)."""
    from stage_commands import train_tiny_runs

    return train_tiny_runs(tmp_path_factory.mktemp("stages"), trained_run)
