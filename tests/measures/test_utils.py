"""utils/: atomic I/O, the run-directory contract, layer taps, one-line CLI errors."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from torch import nn

from utils.errors import ToolkitError
from utils.io import atomic_write, load_json, load_npz, load_torch, save_json, save_npz, save_torch
from utils.rundir import RunDir, is_done, mark_done, safe_name, seed_dirs
from utils.taps import LayerTaps, capture_inputs


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_npz_round_trip_named_keys_and_errors(tmp_path):
    path = save_npz(tmp_path / "a.npz", values=torch.arange(3), ratios=np.ones(2))
    data = load_npz(path, required=["values"])
    assert set(data) == {"values", "ratios"}
    np.testing.assert_array_equal(data["values"], [0, 1, 2])
    with pytest.raises(ToolkitError, match="lacks the arrays"):
        load_npz(path, required=["svals"])
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ToolkitError, match="truncated"):
        load_npz(path)


def test_json_round_trip_and_bad_json(tmp_path):
    path = save_json(tmp_path / "c.json", {"a": 1, "x": np.float64(0.5)})
    assert load_json(path, required=["a"]) == {"a": 1, "x": 0.5}
    path.write_text("{not json")
    with pytest.raises(ToolkitError, match="not valid JSON"):
        load_json(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_load_torch_refuses_code_and_truncation(tmp_path):
    good = save_torch(tmp_path / "good.pt", {"w": torch.ones(2)})
    assert torch.equal(load_torch(good)["w"], torch.ones(2))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"w": _RunsCode()}, handle, protocol=2)
    with pytest.raises(ToolkitError, match="not a readable checkpoint"):
        load_torch(evil)
    good.write_bytes(good.read_bytes()[:30])
    with pytest.raises(ToolkitError, match="not a readable checkpoint"):
        load_torch(good)


def test_rundir_layout_and_done_markers(tmp_path):
    run = RunDir.of(tmp_path, "cifar10", "torchvision:resnet50", 3)
    assert run.root == tmp_path / "cifar10" / "torchvision_resnet50" / "rnd3"
    assert run.epoch_checkpoint(12).name == "epoch_0012.pt"
    assert safe_name("a/b c") == "a_b_c"
    stage = run.root / "some_stage"
    assert not is_done(stage, {"k": 1})
    mark_done(stage, {"k": 1})
    assert is_done(stage, {"k": 1}) and not is_done(stage, {"k": 2})
    for seed in (10, 2):
        RunDir.of(tmp_path, "cifar10", "vgg13", seed).root.mkdir(parents=True)
    assert [r.root.name for r in seed_dirs(tmp_path, "cifar10", "vgg13")] == ["rnd2", "rnd10"]


def test_taps_capture_inputs_in_one_pass():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    inputs, out = capture_inputs(model, [model[0], model[2]], x)
    assert torch.equal(inputs[0], x)
    assert torch.allclose(inputs[1], torch.relu(model[0](x)))
    assert torch.allclose(out, model(x))
    with LayerTaps([model[2]], reduce=lambda i, t: t.sum(dim=1)) as taps:
        model(x)
    assert taps.values[0].shape == (5,)
    assert not model[2]._forward_hooks  # hooks removed on exit


def test_cli_errors_are_one_line_with_status_2(tmp_path):
    script = "from utils.cli import run_main\nfrom utils.errors import ToolkitError\n" \
             "def main(argv):\n    raise ToolkitError('bad thing; do this instead')\nrun_main(main)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: bad thing; do this instead"


def test_measurement_stages_switch_tf32_off_unless_asked():
    """issue 27: measurement_device turns cuDNN's and cuBLAS's TF32 off (cuDNN allows it by default) unless
    --allow-tf32; every measurement stage parses the flag and records it."""
    import torch

    import analyzing
    import extractor
    import stability
    from utils.device import measurement_device

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert measurement_device("cpu") == torch.device("cpu")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        measurement_device("cpu", allow_tf32=True)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert analyzing.parse_args(["--allow-tf32"]).allow_tf32 and not stability.parse_args([]).allow_tf32
    assert not hasattr(extractor.parse_args([]), "allow_tf32")     # extraction computes nothing on a GPU
