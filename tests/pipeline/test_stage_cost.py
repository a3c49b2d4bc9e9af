"""benchmarks/stage_cost.py: which commands are sample-sized, how their flags are set, the growth exponent."""
import math

from benchmarks.stage_cost import SAMPLE_FLAGS, sized, slope, stage_name, with_values


def test_sample_sized_commands_and_their_flags():
    analysis = ["analyzing.py", "--seed", "0", "--num_grams", "10000", "--num_stability", "10000"]
    assert sized(analysis) and sized(["kernels.py", "--seed", "0"]) and sized(["stability.py", "--P", "500"])
    assert not sized(["features.py", "--seed", "0"]) and not sized(["train_classifier.py", "--epochs", "1"])
    assert with_values(analysis, dict.fromkeys(SAMPLE_FLAGS, "2500")) == [
        "analyzing.py", "--seed", "0", "--num_grams", "2500", "--num_stability", "2500"]
    assert stage_name(["stability.py", "--seed", "0", "--init", "--P", "9"]) == "stability.py --init"
    assert stage_name(["decompose.py", "indices", "--seed", "0"]) == "decompose.py indices"


def test_growth_exponent_is_the_log_log_slope():
    assert slope((1000, 3.0), (4000, 48.0)) == 2.0          # n^2: 16x for 4x
    assert math.isclose(slope((2500, 10.0), (10000, 40.0)), 1.0)
    assert math.isclose(slope((500, 1.0), (2000, 1.0)), 0.0)
