"""train_classifier.py: learning on digits, exact resume after SIGKILL and SIGTERM, one-line errors."""
import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

import train_classifier
from training.recipes import get_recipe
from training.schedule import learning_rate
from utils.cli import run_main
from utils.io import load_torch
from utils.rundir import RunDir

TINY = ["--model-name", "lenet", "--traindata", "digits", "--num_classes", "10", "--width", "0.5",
        "--batchsize", "64", "--no-progress", "--device", "cpu"]


def train(workdir, *extra, check=True):
    result = subprocess.run([sys.executable, "train_classifier.py", *TINY, "--workdir", str(workdir), *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def train_here(workdir, *extra, check=True):
    """train_classifier.py in this process (no interpreter start-up), as `train` returns it."""
    argv = [*TINY, "--workdir", str(workdir), *extra]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        run_main(train_classifier.main, argv)
    if check:
        assert exit_info.value.code == 0, err.getvalue()
    return subprocess.CompletedProcess(argv, exit_info.value.code, out.getvalue(), err.getvalue())


def final_weights(workdir, epochs):
    run = RunDir.of(workdir, "digits", "lenet", 0)
    return load_torch(run.epoch_checkpoint(epochs))["model"]


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    workdir = tmp_path_factory.mktemp("ref")
    train(workdir, "--epochs", "4")
    return workdir


def test_training_on_digits_lowers_the_loss(reference):
    run = RunDir.of(reference, "digits", "lenet", 0)
    rows = list(csv.DictReader(run.train_log.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    assert float(rows[-1]["test_acc"]) > 0.4
    assert run.epoch_checkpoint(0).is_file() and run.last.is_file() and (run.root / "_done.json").is_file()


def test_bf16_and_channels_last_train_as_well_and_are_part_of_the_run(reference, tmp_path):
    train_here(tmp_path, "--epochs", "4", "--bf16", "--channels-last")
    rows = list(csv.DictReader(RunDir.of(tmp_path, "digits", "lenet", 0).train_log.open()))
    baseline = list(csv.DictReader(RunDir.of(reference, "digits", "lenet", 0).train_log.open()))
    assert abs(float(rows[-1]["test_acc"]) - float(baseline[-1]["test_acc"])) < 0.1
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    result = train_here(tmp_path, "--epochs", "4", "--resume", check=False)  # fp32 would continue a bf16 run
    assert result.returncode == 2 and "bf16" in result.stderr


def test_compiled_training_matches_eager_and_is_no_run_flag(tmp_path):
    """--compile aot_eager traces the same graphs torch.compile's default inductor backend compiles, in seconds."""
    train_here(tmp_path / "compiled", "--epochs", "4", "--compile", "aot_eager")
    train_here(tmp_path / "eager", "--epochs", "4")  # in this process too: the same thread count
    compiled, eager = final_weights(tmp_path / "compiled", 4), final_weights(tmp_path / "eager", 4)
    assert compiled.keys() == eager.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    assert "nothing to do" in train_here(tmp_path / "compiled", "--epochs", "4").stdout  # compiled or not


def test_second_call_does_nothing(reference):
    result = train_here(reference, "--epochs", "4")
    assert "nothing to do" in result.stdout


def _kill_when(workdir, sig, condition):
    """Start a 4-epoch run and send `sig` once `condition(run)` holds; returns the exit status."""
    proc = subprocess.Popen([sys.executable, "train_classifier.py", *TINY, "--workdir", str(workdir),
                             "--epochs", "4"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = RunDir.of(workdir, "digits", "lenet", 0)
    deadline = time.time() + 240
    while not condition(run) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


def _log_rows(run) -> int:
    return len(run.train_log.read_text().splitlines()) - 1 if run.train_log.is_file() else 0


KILL_POINTS = {  # five moments of a 4-epoch run
    "before any checkpoint": lambda run: run.config.is_file(),
    "after the initialisation checkpoint": lambda run: run.epoch_checkpoint(0).is_file(),
    "mid epoch 1": lambda run: run.last.is_file(),
    "after epoch 1": lambda run: _log_rows(run) >= 1,
    "after epoch 3": lambda run: _log_rows(run) >= 3,
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_POINTS))
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path, moment):
    status = _kill_when(tmp_path, signal.SIGKILL, KILL_POINTS[moment])
    assert status == -signal.SIGKILL
    for path in RunDir.of(tmp_path, "digits", "lenet", 0).checkpoints.glob("*.pt"):  # a killed write leaves only a
        load_torch(path)                                                         # hidden .tmp, never a partial .pt
    train(tmp_path, "--epochs", "4", "--resume")
    assert_identical(final_weights(reference, 4), final_weights(tmp_path, 4))


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resume_is_bit_identical(reference, tmp_path):
    status = _kill_when(tmp_path, signal.SIGTERM, lambda run: run.epoch_checkpoint(0).is_file())
    assert status == 143
    ckpt = load_torch(RunDir.of(tmp_path, "digits", "lenet", 0).last)
    assert ckpt["batch"] > 0 or ckpt["epoch"] > 0
    train(tmp_path, "--epochs", "4", "--resume")
    assert_identical(final_weights(reference, 4), final_weights(tmp_path, 4))


def test_sigterm_at_an_epochs_last_batch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """A SIGTERM during an epoch's last batch saves last.pt with every batch of it trained (issue 27: a Slurm time
    limit hit it); the resume trains no batch of that epoch, logs it with its last step's rate, and goes on."""
    from training.loop import Trainer

    step, steps = Trainer.step, []

    def stop_at_epoch_end(self, x, y):
        steps.append(len(y))
        if len(steps) == self.iters_per_epoch:   # the last batch of epoch 1
            self._stop_requested = True
        return step(self, x, y)

    reference = tmp_path / "uninterrupted"     # in this process too: the same threads
    train_here(reference, "--epochs", "2")
    monkeypatch.setattr(Trainer, "step", stop_at_epoch_end)
    assert train_here(tmp_path, "--epochs", "2", check=False).returncode == 143
    last = load_torch(RunDir.of(tmp_path, "digits", "lenet", 0).last)
    assert (last["epoch"], last["batch"]) == (0, len(steps))
    monkeypatch.setattr(Trainer, "step", step)
    train_here(tmp_path, "--epochs", "2", "--resume")
    assert_identical(final_weights(reference, 2), final_weights(tmp_path, 2))
    with open(RunDir.of(tmp_path, "digits", "lenet", 0).train_log) as resumed, \
            open(RunDir.of(reference, "digits", "lenet", 0).train_log) as uninterrupted:
        assert [row["lr"] for row in csv.DictReader(resumed)] == [row["lr"] for row in csv.DictReader(uninterrupted)]


def test_existing_run_needs_resume_or_force(reference, tmp_path):
    train_here(tmp_path, "--epochs", "1")
    result = train_here(tmp_path, "--epochs", "2", check=False)
    assert result.returncode == 2 and "--resume" in result.stderr


def test_force_retrains_without_the_old_runs_checkpoints(tmp_path):
    """A shorter --force retraining leaves no epoch of the longer run before it for a stage to load."""
    run = RunDir.of(tmp_path, "digits", "lenet", 0)
    train_here(tmp_path, "--epochs", "2", "--save-epochs", "2")
    old_init = load_torch(run.epoch_checkpoint(0))["model"]
    train_here(tmp_path, "--epochs", "1", "--width", "0.25", "--force")
    assert run.saved_epochs() == [0, 1]
    assert load_torch(run.epoch_checkpoint(0))["model"]["conv1.weight"].shape != old_init["conv1.weight"].shape


def test_truncated_last_checkpoint_is_a_clear_error(tmp_path):
    train_here(tmp_path, "--epochs", "1")
    last = RunDir.of(tmp_path, "digits", "lenet", 0).last
    last.write_bytes(last.read_bytes()[:100])
    result = train_here(tmp_path, "--epochs", "1", "--resume", "--force", check=False)
    assert result.returncode == 0  # --force ignores the broken file and retrains
    last.write_bytes(last.read_bytes()[:100])
    os.remove(RunDir.of(tmp_path, "digits", "lenet", 0).root / "_done.json")
    result = train_here(tmp_path, "--epochs", "1", "--resume", check=False)
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr


def test_checkpoint_generator_state_is_the_cpu_generators_and_resumes_on_the_cpu(tmp_path):
    """last.pt holds a CPU generator's state (issue 27: device-independent), and resuming with it trains on; a state
    of another kind (a CUDA generator's, as an older toolkit wrote on a GPU) is a one-line error, not a traceback."""
    from utils.io import save_torch

    train_here(tmp_path, "--epochs", "2")
    run = RunDir.of(tmp_path, "digits", "lenet", 0)
    checkpoint = load_torch(run.last)
    assert checkpoint["generator"].dtype == torch.uint8
    assert checkpoint["generator"].numel() == torch.Generator().get_state().numel()

    def rewound(generator_state):       # last.pt as after epoch 1, with this generator state; the run not done
        save_torch(run.last, {**checkpoint, "epoch": 1, "batch": 0, "generator": generator_state})
        (run.root / "_done.json").unlink(missing_ok=True)

    rewound(checkpoint["generator"])
    assert train_here(tmp_path, "--epochs", "2", "--resume").returncode == 0
    rewound(torch.zeros(16, dtype=torch.uint8))                       # the size of a CUDA (Philox) generator state
    result = train_here(tmp_path, "--epochs", "2", "--resume", check=False)
    assert result.returncode == 2 and "random-generator state of another kind" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_schedules_match_pytorch_closed_forms():
    recipe = get_recipe("seed000", epochs=2)
    assert learning_rate(recipe, 0, 10) == pytest.approx(0.1)
    assert learning_rate(recipe, 10, 10) == pytest.approx(0.05)
    seed004 = get_recipe("seed004", epochs=100)
    assert learning_rate(seed004, 100 * 10, 10) == pytest.approx(0.1 * 0.146, rel=1e-2)  # rises past T_max
    aka = get_recipe("akamaster")
    assert [learning_rate(aka, e * 5, 5) for e in (99, 100, 150)] == pytest.approx([0.1, 0.01, 0.001])


@pytest.mark.parametrize("recipe", ["seed000", "seed004"])
def test_initialisation_is_the_recipes(tmp_path, trained_run, recipe):
    """seed004 §3 trains VGG-bn from PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a conv;
    seed000 §4 from torchvision's kaiming fan_out, N(0, 2 / (out_channels k^2)). Epoch 0 of each recipe's run is
    tested against both laws with Kolmogorov-Smirnov on the largest conv; BN starts at weight 1, bias 0."""
    from scipy import stats

    run = trained_run(tmp_path, "vgg11", "digits", 0, "--width", "0.125", "--epochs", "1", "--recipe", recipe)
    weights = load_torch(run.epoch_checkpoint(0))["model"]
    convs = {k: v for k, v in weights.items() if k.endswith(".weight") and v.dim() == 4}
    w = max(convs.values(), key=torch.numel)
    fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
    bound = 1 / fan_in ** 0.5
    uniform = stats.kstest(w.flatten().numpy(), "uniform", args=(-bound, 2 * bound)).pvalue
    normal = stats.kstest(w.flatten().numpy(), "norm", args=(0, (2 / fan_out) ** 0.5)).pvalue
    if recipe == "seed004":
        assert w.abs().max() <= bound and uniform > 1e-3 and normal < 1e-6
    else:
        assert normal > 1e-3 and uniform < 1e-6
    bn = [k for k in weights if k.endswith("running_var")]
    assert bn and all(torch.equal(weights[k.replace("running_var", "weight")], torch.ones_like(weights[k]))
                      for k in bn)


def test_deterministic_switches_on_deterministic_algorithms_and_is_no_run_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        train_here(tmp_path, "--epochs", "1", "--deterministic")
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
    assert "nothing to do" in train_here(tmp_path, "--epochs", "1").stdout   # the same run, with or without it
