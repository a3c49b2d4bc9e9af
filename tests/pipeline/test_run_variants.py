"""Runs that differ in a run-defining flag coexist (issue 17 item 2): the Gaussian corruption std (seed004 §2.7) and
twopoints' training-set size are part of the run's folder, stages find the run by the same flags, and reproduce.py
plans a sigma sweep as one run folder per std."""
import pytest

import reproduce
import stability
from pipeline import contract, plan
from pipeline.loaded import load_config
from utils.rundir import RunDir, run_variant, split_variant, variant_flags

TRAIN = ("--width", "0.25", "--epochs", "1")


def test_variant_names():
    assert run_variant("digits") == "" and run_variant("digits", 10.0) == "sigma10"
    assert run_variant("cifar10", 0.01) == "sigma0.01" and run_variant("twopoints", 0.0, 2048) == "ptr2048"
    assert run_variant("twopoints", 1.0, 1024) == "sigma1" and run_variant("digits", 0.0, 2048) == ""
    assert RunDir.of("w", "digits", "vgg11", 3, "sigma10").root.as_posix() == "w/digits/vgg11@sigma10/rnd3"
    assert split_variant("vgg11@sigma10") == ("vgg11", "sigma10") and split_variant("vgg11") == ("vgg11", "")
    # a run's identity flags from its folders when it has no config.json yet (what a hint tells to train)
    run = RunDir.of("w", "twopoints", "vgg11", 7, run_variant("twopoints", 10.0, 2048, -0.1))
    assert run.identity() == ["--model-name", "vgg11", "--traindata", "twopoints", "--seed", "7",
                              "--gaussian_corruption_std", "10", "--ptr", "2048", "--selectivity_reg", "-0.1"]
    assert variant_flags("") == [] and run.identity(seed=False)[:4] == ["--model-name", "vgg11", "--traindata",
                                                                         "twopoints"]


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


def test_the_run_this_first_hint_of_a_variant_run_names_that_run(tmp_path, trained_run, capsys):
    """kernels.py before analyzing.py on a @sigma run: the hint's command, parsed by analyzing.py, is the same run (a
    hint rebuilt from the folder name would say --model-name lenet@sigma2, which names no run)."""
    import analyzing
    import kernels
    from utils.cli import run_main

    run = trained_run(tmp_path, "lenet", "digits", 0, *TRAIN, "--gaussian_corruption_std", "2")
    assert run.group.name == "lenet@sigma2" and run.seed == 0 and run.variant == "sigma2"
    flags = ["--model-name", "lenet", "--traindata", "digits", "--gaussian_corruption_std", "2", "--workdir",
             str(tmp_path), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(kernels.main, flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    hint = err.split("`")[1].split()
    assert hint[:2] == ["python", "analyzing.py"], err
    parsed = analyzing.parse_args([*hint[2:], "--workdir", str(tmp_path)])
    assert RunDir.from_args(parsed) == run
