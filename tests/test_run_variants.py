"""Runs that differ in a run-defining flag coexist (issue 17 item 2): the Gaussian corruption std (seed004 §2.7) and
twopoints' training-set size are part of the run's folder, stages find the run by the same flags, and reproduce.py
plans a sigma sweep as one run folder per std."""
import reproduce
import stability
from pipeline import contract, plan
from pipeline.loaded import load_config
from utils.rundir import RunDir, run_variant, split_variant

TRAIN = ("--width", "0.25", "--epochs", "1")


def test_variant_names():
    assert run_variant("digits") == "" and run_variant("digits", 10.0) == "sigma10"
    assert run_variant("cifar10", 0.01) == "sigma0.01" and run_variant("twopoints", 0.0, 2048) == "ptr2048"
    assert run_variant("twopoints", 1.0, 1024) == "sigma1" and run_variant("digits", 0.0, 2048) == ""
    assert RunDir.of("w", "digits", "vgg11", 3, "sigma10").root.as_posix() == "w/digits/vgg11@sigma10/rnd3"
    assert split_variant("vgg11@sigma10") == ("vgg11", "sigma10") and split_variant("vgg11") == ("vgg11", "")


def test_a_sigma_sweep_lives_in_one_workdir_and_stages_find_each_run(tmp_path, trained_run):
    clean = trained_run(tmp_path, "lenet", "digits", 0, *TRAIN)
    noisy = trained_run(tmp_path, "lenet", "digits", 0, *TRAIN, "--gaussian_corruption_std", "2")
    assert clean.root != noisy.root and noisy.group.name == "lenet@sigma2"
    assert load_config(clean)["flags"]["corruption"] == 0 and load_config(noisy)["flags"]["corruption"] == 2
    common = ["--model-name", "lenet", "--traindata", "digits", "--workdir", str(tmp_path), "--device", "cpu",
              "--P", "20", "--corrupt_test"]
    assert stability.main(common) == 0 and stability.main([*common, "--gaussian_corruption_std", "2"]) == 0
    assert contract.load(clean, "stability", "summary")["corruption_std"] == 0
    assert contract.load(noisy, "stability", "summary")["corruption_std"] == 2


def test_reproduce_plans_one_run_per_std(tmp_path):
    args = reproduce.parse_args(["--paper", "004", "--models", "lenet", "--num_seed", "2", "--workdir", str(tmp_path),
                                 "--gaussian_corruption_std", "0", "0.1", "10"])
    chains, _, _ = plan.build_plan(args, plan.resolve_grid(args))
    folders = sorted({chain.lock.parents[2].name for chain in chains})
    assert folders == ["lenet", "lenet@sigma0.1", "lenet@sigma10"] and len(chains) == 6
    train = [c for chain in chains for c in chain.commands if c.stage == "train"]
    assert sum("--gaussian_corruption_std" in c.argv for c in train) == 4
