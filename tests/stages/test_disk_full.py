"""A full disk or an exhausted quota (ENOSPC, EDQUOT) is one line and exit status 2, naming the file and the free
space; finished work is kept, and the same command after space is freed completes with the files of an
uninterrupted run. The N-th atomic write is made to fail (issue 15)."""
import errno
import os

import numpy as np
import pytest
import torch
from kill_at_write import renaming

import stability
import train_classifier
from pipeline import contract
from utils.cli import run_main
from utils.io import load_torch
from utils.rundir import RunDir

TRAIN = ["--model-name", "lenet", "--traindata", "digits", "--width", "0.25", "--epochs", "2", "--no-progress",
         "--device", "cpu"]


def refuse_write(monkeypatch, at: int, code: int = errno.ENOSPC) -> None:
    """os.replace raises OSError(code) at the at-th rename of a temporary file of utils.io."""
    def on_rename(count: int) -> None:
        if count == at:
            raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "replace", renaming(os.replace, on_rename))


def exits_with_one_line(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_main(main, argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "quota exceeded")])
def test_training_on_a_full_disk_stops_with_one_line_and_resumes_to_the_same_weights(
        tmp_path, monkeypatch, capsys, trained_run, code, reason):
    reference = trained_run(tmp_path / "reference", "lenet", "digits", 0, *TRAIN[4:8])
    refuse_write(monkeypatch, at=4, code=code)   # config, epoch 0, last.pt of epoch 1, then the 4th write
    err = exits_with_one_line(train_classifier.main, [*TRAIN, "--workdir", str(tmp_path / "full")], capsys)
    assert reason in err and "MiB free" in err and str(tmp_path / "full") in err
    run = RunDir.of(tmp_path / "full", "digits", "lenet", 0)
    assert not (run.root / "_done.json").exists()
    monkeypatch.undo()
    assert train_classifier.main([*TRAIN, "--workdir", str(tmp_path / "full"), "--resume"]) == 0
    mine, theirs = (load_torch(r.epoch_checkpoint(2))["model"] for r in (run, reference))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_stage_on_a_full_disk_keeps_nothing_half_done_and_completes_after(tmp_path, monkeypatch, capsys,
                                                                              trained_run):
    run = trained_run(tmp_path, "lenet", "digits", 0, *TRAIN[4:8])
    argv = ["--model-name", "lenet", "--traindata", "digits", "--workdir", str(tmp_path), "--device", "cpu",
            "--by_layer", "--P", "24", "--batchsize", "12"]
    assert stability.main(argv) == 0
    reference = contract.load(run, "stability", "stability")
    refuse_write(monkeypatch, at=2)
    err = exits_with_one_line(stability.main, [*argv, "--force"], capsys)
    assert "no space left" in err
    assert not contract.done(run, "stability")
    monkeypatch.undo()
    assert stability.main(argv) == 0
    again = contract.load(run, "stability", "stability")
    for key in ("D", "G", "R"):
        np.testing.assert_array_equal(again[key], reference[key])
