"""reproduce.py: grids through submitit's local executor, skipping done work, failures, --print."""
import subprocess
import sys

from conftest import ROOT

import reproduce
from utils.rundir import RunDir

GRID = ["--models", "lenet", "--epochs", "1", "--width", "0.25", "--device", "cpu", "--stages", "train"]


def test_two_run_grid_through_submitit_local_executor_then_nothing_to_do(tmp_path, capsys):
    args = [*GRID, "--seeds", "0", "1", "--workdir", str(tmp_path)]
    assert reproduce.main([*args, "--launcher", "submitit-local"]) == 0
    for seed in (0, 1):
        run = RunDir.of(tmp_path, "digits", "lenet", seed)
        assert (run.root / "_done.json").is_file() and (run.root / "logs" / "train.log").is_file()
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert reproduce.main(args) == 0
    out = capsys.readouterr().out
    assert "0 done, 2 skipped, 0 failed" in out and "nothing to do" in out


def test_a_broken_run_is_reported_and_the_others_complete(tmp_path, capsys):
    status = reproduce.main([*GRID, "--models", "lenet", "nonet", "--seeds", "0", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    assert "1 done, 0 skipped, 1 failed" in out
    assert "FAILED train" in out and "nonet" in out and "train.log" in out
    log = RunDir.of(tmp_path, "digits", "nonet", 0).root / "logs" / "train.log"
    assert "unknown model 'nonet'" in log.read_text()


def test_print_lists_commands_that_run_as_is(tmp_path, capsys):
    assert reproduce.main([*GRID, "--seeds", "3", "--workdir", str(tmp_path), "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python train_classifier.py")
    result = subprocess.run(lines[0].replace("python", sys.executable, 1), shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (RunDir.of(tmp_path, "digits", "lenet", 3).root / "_done.json").is_file()


def test_full_grids_follow_the_papers():
    (grid,) = reproduce.resolve_grid(reproduce.parse_args(["--paper", "000", "--full"]))
    assert grid.traindata == ("cifar10", "cifar100", "svhn", "mnist")
    assert grid.models == ("vgg13", "vgg16", "resnet18", "resnet34")
    assert grid.seeds == tuple(range(10)) and grid.epochs == 1200 and grid.recipe == "seed000"
    (grid,) = reproduce.resolve_grid(reproduce.parse_args(["--paper", "002", "--full", "--num_seed", "3"]))
    assert grid.models == ("scattering",) and grid.recipe == "seed002" and grid.seeds == (0, 1, 2)


def test_demo_grid_trains_each_run_once_for_every_paper_that_measures_it():
    parts = reproduce.resolve_grid(reproduce.parse_args([]))
    assert [(p.models, p.papers) for p in parts] == [(("resnet18",), ("000", "004", "003")),
                                                     (("rainbow_mlp",), ("002",))]
    (seed003,) = reproduce.resolve_grid(reproduce.parse_args(["--paper", "003"]))
    assert seed003.models == ("resnet20",) and seed003.papers == ("003",)
    (seed002,) = reproduce.resolve_grid(reproduce.parse_args(["--paper", "002"]))
    assert seed002.models == ("rainbow_mlp", "rainbow_cnn") and seed002.recipe == "seed002_tutorial"
    (merged,) = reproduce.resolve_grid(reproduce.parse_args(["--models", "lenet", "--num_seed", "2"]))
    assert merged.papers == ("000", "004", "003", "002") and merged.seeds == (0, 1)


def test_unknown_stage_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "reproduce.py", "--stages", "bogus", "--workdir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "bogus" in result.stderr


def test_a_chain_held_by_another_process_is_left_alone(tmp_path, capsys):
    """Two reproduce.py processes on one workdir: a chain locked by one is not run by the other."""
    lock = RunDir.of(tmp_path, "digits", "lenet", 0).root / "logs" / ".lock"
    with reproduce.exclusive(lock) as acquired:
        assert acquired
        assert reproduce.main([*GRID, "--seeds", "0", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 left to another running process" in out
    assert not (RunDir.of(tmp_path, "digits", "lenet", 0).root / "_done.json").exists()


def test_slurm_launcher_without_slurm_is_one_line_naming_the_local_way(tmp_path):
    """No sbatch on PATH (a laptop): one line, exit 2, pointing at --launcher submitit-local; nothing submitted."""
    result = subprocess.run([sys.executable, "reproduce.py", "--paper", "004", *GRID, "--workdir", str(tmp_path),
                             "--launcher", "slurm"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": str(tmp_path / "no-slurm-here"), "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--launcher submitit-local" in result.stderr
    assert not (tmp_path / "digits").exists()


def test_a_stage_stopped_by_sigterm_is_interrupted_and_stops_its_chain(tmp_path, capsys):
    """SIGTERM (Slurm's requeue, pre-emption, time limit) is not a failure: status 'interrupted', the chain runs
    nothing after it, and the summary says to rerun; a chain is picklable and its checkpoint requeues itself."""
    import pickle

    def command(name, code):
        script = tmp_path / f"{name}.py"
        script.write_text(code)
        return reproduce.Command(name, [str(script)], None, tmp_path / f"{name}.log")

    saved = command("train", "raise SystemExit(143)")  # train_classifier.py after saving last.pt
    killed = command("analyzing", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    after = command("extract", "pass")
    reproduce.Chain("digits/lenet/rnd0", tmp_path / ".lock", [saved])()
    chain = reproduce.Chain("digits/lenet/rnd1", tmp_path / ".lock1", [killed, after])()
    assert saved.status == killed.status == "interrupted" and after.status == "pending"
    assert reproduce.summarize([saved, killed, after]) == 1
    out = capsys.readouterr().out
    assert "0 failed, 2 interrupted" in out and "INTERRUPTED analyzing (rerun" in out
    delayed = chain.checkpoint()
    assert delayed.function is chain
    again = pickle.loads(pickle.dumps(chain))
    assert again._running is None and [c.status for c in again.commands] == ["interrupted", "pending"]
    again()  # a requeued attempt retries the interrupted stage
    assert [c.status for c in again.commands] == ["interrupted", "pending"]
