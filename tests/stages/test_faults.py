"""Fault injection for every stage after training (issue 9): each is SIGKILLed part-way through a --force rerun
(tests/kill_at_write.py, just before the rename of its middle file). Then no file under a final name is partial,
the stage is not marked done, and a plain rerun completes with exactly the files of an uninterrupted run, which
also pins every sampling stage (noise, diffeomorphisms, rainbow sampling, Gram and OOD subsets) to its seed."""
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from kill_at_write import renaming
from stage_commands import RUN, SMALL, STAGES, ensure

import decompose
import train_classifier
from pipeline import contract
from utils.io import load_json, load_npz, load_torch
from utils.rundir import DONE_FILE, RunDir

VOLATILE = {"seconds", "time", "argv", "git_commit"}  # wall time and command line differ between two runs


@pytest.fixture(scope="module")
def workdir(stage_workdir):
    return stage_workdir


def count_writes(monkeypatch, run) -> int:
    """Run `run()` counting the renames of utils.io's temporary files."""
    counts = []
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", renaming(os.replace, counts.append))
        assert run() == 0
    return len(counts)


def snapshot(folder: Path) -> dict:
    """Every final file under `folder` parsed: the arrays of each .npz and .pt, JSON without its wall-time fields,
    tables and report text; figures by name only. Parsing fails loudly on a partial file."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        name = str(path.relative_to(folder))
        if path.suffix == ".npz":
            files[name] = load_npz(path)
        elif path.suffix == ".pt":
            files[name] = dict(_tensors(load_torch(path)))
        elif path.suffix == ".json":
            files[name] = _without_volatile(load_json(path))
        elif path.suffix in (".csv", ".md"):  # report.md's "Generated <date> <time> from ..." line aside
            files[name] = [line for line in path.read_text().splitlines() if not line.startswith("Generated ")]
        else:
            files[name] = None
    return files


def _tensors(obj, prefix=""):
    """(dotted key, numpy array) for every tensor of a checkpoint."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}{key}.")
    elif isinstance(obj, torch.Tensor):
        yield prefix[:-1], obj.numpy()


def _without_volatile(obj):
    if isinstance(obj, dict):
        return {key: _without_volatile(value) for key, value in obj.items() if key not in VOLATILE}
    if isinstance(obj, list):
        return [_without_volatile(value) for value in obj]
    return obj


def assert_same_files(found: dict, expected: dict) -> None:
    assert sorted(found) == sorted(expected)
    for name, value in expected.items():
        if isinstance(value, dict) and name.endswith((".npz", ".pt")):
            assert sorted(found[name]) == sorted(value), name
            for key in value:
                np.testing.assert_array_equal(found[name][key], value[key], err_msg=f"{name}:{key}")
        else:
            assert json.dumps(found[name], sort_keys=True) == json.dumps(value, sort_keys=True), name


@pytest.mark.slow
# CSG: ours' code; training's kill points: tests/training/test_train.py
@pytest.mark.parametrize("name", [name for name in STAGES if not name.startswith("csg") and name != "train"])
def test_stage_killed_part_way_reruns_to_the_files_of_an_uninterrupted_run(workdir, name, monkeypatch):
    stage = STAGES[name]
    for need in stage.needs:
        ensure(workdir, need)
    folder = stage.folder(workdir)
    force = ["--force"] if stage.force else []
    writes = count_writes(monkeypatch, lambda: stage.main(workdir, *force))
    reference = snapshot(folder)
    assert writes >= 2 and ((folder / DONE_FILE).is_file() or not stage.force)

    middle = (writes + 1) // 2
    killed = subprocess.run([sys.executable, "tests/kill_at_write.py", str(middle), *stage.command(workdir), *force],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (folder / DONE_FILE).exists()  # a killed --force rerun is not taken for finished
    assert list(folder.rglob(".*.tmp")), "the kill should leave the middle file under its temporary name"
    snapshot(folder)  # every file under a final name parses completely

    assert stage.main(workdir) == 0  # no --force: the missing done mark alone makes it redo the stage
    assert_same_files(snapshot(folder), reference)


@pytest.mark.slow
def test_import_killed_part_way_is_rerun_and_force_invalidates_measurements(workdir):
    ensure(workdir, "features")
    source = RunDir.of(workdir, "digits", "resnet20", 0)
    weights = source.epoch_checkpoint(1)
    imported = RunDir.of(workdir, "digits", "resnet20", 5)
    argv = ["import_weights.py", *RUN, "--width", "0.25", "--weights", str(weights), "--seed", "5"]
    killed = subprocess.run([sys.executable, "tests/kill_at_write.py", "2", *argv, "--workdir", str(workdir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert imported.config.is_file() and not (imported.root / DONE_FILE).exists()
    import_weights = importlib.import_module("import_weights")
    assert import_weights.main([*argv[1:], "--workdir", str(workdir)]) == 0  # the unfinished import is redone
    assert (imported.root / DONE_FILE).is_file() and imported.last.is_file()

    features = contract.stage_dir(imported, "features") / DONE_FILE
    assert STAGES["features"].main(workdir, "--seed", "5") == 0 and features.is_file()
    assert import_weights.main([*argv[1:], "--workdir", str(workdir), "--force"]) == 0
    assert not features.exists()  # measured on the replaced weights: stale
    assert STAGES["features"].main(workdir, "--seed", "5") == 0 and features.is_file()
    assert train_classifier.main([*RUN, "--width", "0.25", "--epochs", "1", "--no-progress", "--seed", "5",
                                  "--workdir", str(workdir), "--force"]) == 0
    assert not features.exists() and imported.saved_epochs() == [0, 1]


def test_essentiality_depends_on_the_noise_seed_only(workdir):
    ensure(workdir, "decompose indices")
    args = ["essential", *RUN, "--workdir", str(workdir), "-k", "3", *SMALL]
    path = contract.stage_path(RunDir.of(workdir, "digits", "resnet20", 0), "decompose-essential", "essential")
    assert decompose.main([*args, "--force"]) == 0
    first = json.loads(path.read_text())
    assert decompose.main([*args, "--force", "--batchsize", "17"]) == 0
    assert json.loads(path.read_text()) == first  # the noise does not depend on the batching
    assert decompose.main([*args, "--force", "--noise-seed", "1"]) == 0
    assert json.loads(path.read_text()) != first
