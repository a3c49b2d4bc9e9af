"""utils.memory.halving_batch: a pass that runs out of device memory runs again with half the batch, down to 1."""
import pytest
import torch

from utils.errors import ToolkitError
from utils.memory import halving_batch


def test_the_batch_halves_until_the_pass_fits_and_the_result_is_the_passs():
    asked = []

    def run_pass(batch):
        asked.append(batch)
        if batch > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return f"done at {batch}"
    assert halving_batch(run_pass, 48, "a pass") == ("done at 3", 3)
    assert asked == [48, 24, 12, 6, 3]


def test_below_a_batch_of_one_it_is_a_one_line_error_and_other_errors_pass_through(capfd):
    def never_fits(batch):
        raise torch.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(ToolkitError, match="features on svhn: out of device memory even with a batch of 1"):
        halving_batch(never_fits, 4, "features on svhn")
    assert capfd.readouterr().err.count("running the pass again") == 2   # 4 -> 2 -> 1

    def wrong(batch):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        halving_batch(wrong, 8, "a pass")
