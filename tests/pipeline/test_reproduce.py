"""reproduce.py: grids through submitit's local executor, skipping done work, failures, --print."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import reproduce
from pipeline import commands, local, plan
from utils.cli import run_main
from utils.rundir import RunDir

GRID = ["--models", "lenet", "--epochs", "1", "--width", "0.25", "--device", "cpu", "--stages", "train"]


@pytest.mark.slow
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
    """A run that fails at training (a torchvision architecture that does not exist passes the plan's name check)."""
    status = reproduce.main([*GRID, "--models", "lenet", "torchvision:nonet", "--seeds", "0", "--workdir",
                             str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    assert "1 done, 0 skipped, 1 failed" in out
    assert "FAILED train" in out and "nonet" in out and "train.log" in out
    log = RunDir.of(tmp_path, "digits", "torchvision:nonet", 0).root / "logs" / "train.log"
    assert "nonet" in log.read_text() and "Traceback" not in log.read_text()


@pytest.mark.parametrize("flags, message", [(["--models", "nosuchnet"], "unknown model 'nosuchnet'"),
                                            (["--traindata", "nosuchset"], "unknown dataset 'nosuchset'"),
                                            (["--traindata", "cifar10"], "cifar10: 6 file(s) missing under"),
                                            (["--detach"], "--detach leaves a grid's jobs to Slurm"),
                                            (["--launcher", "slurm", "--cpus-per-task", "0"],
                                             "--cpus-per-task must be at least 1")])
def test_a_bad_grid_is_one_line_before_anything_runs(tmp_path, capsys, flags, message):
    """The plan is checked first: exit 2, one line, no run folder (and --print lists nothing for a bad name)."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(reproduce.main, ["--paper", "000", *GRID, *flags, "--seeds", "0", "--workdir", str(tmp_path / "w"),
                                  "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "w").exists()
    if "missing" not in message:
        with pytest.raises(SystemExit):
            run_main(reproduce.main, ["--paper", "000", *GRID, *flags, "--print"])
        assert capsys.readouterr().out == ""


@pytest.mark.parametrize("flags, message", [
    (["--paper", "002", "--models", "rainbow_mlp", "resnet18"],
     "paper 002 cannot measure resnet18 (rainbow): rainbow.py needs bias-free conv/linear weight layers"),
    (["--paper", "004", "--models", "rainbow_mlp"], "paper 004 cannot measure rainbow_mlp (laplacian)"),
    (["--paper", "003", "--models", "torchvision:squeezenet1_0"],
     "the last weight layer of torchvision:squeezenet1_0 is not a Linear classifier"),
    (["--paper", "003", "--traindata", "twopoints"], "paper 003's decompose-indices cannot measure runs on twopoints")])
def test_a_paper_that_cannot_measure_a_model_is_one_line_before_anything_runs(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_main(reproduce.main, [*flags, "--workdir", str(tmp_path / "w"), "--print"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "w").exists()


def test_print_lists_commands_that_run_as_is(tmp_path, capsys):
    assert reproduce.main([*GRID, "--seeds", "3", "--workdir", str(tmp_path), "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python train_classifier.py")
    result = subprocess.run(lines[0].replace("python", sys.executable, 1), shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (RunDir.of(tmp_path, "digits", "lenet", 3).root / "_done.json").is_file()


def test_full_grids_follow_the_papers():
    (grid,) = plan.resolve_grid(reproduce.parse_args(["--paper", "000", "--full"]))
    assert grid.traindata == ("cifar10", "cifar100", "svhn", "mnist")
    assert grid.models == ("vgg13", "vgg16", "resnet18", "resnet34")
    assert grid.seeds == tuple(range(10)) and grid.epochs == 1200 and grid.recipe == "seed000"
    grid, four, *sweeps = plan.resolve_grid(reproduce.parse_args(["--paper", "002", "--full", "--num_seed", "3"]))
    assert grid.models == ("scattering",) and grid.recipe == "seed002" and grid.seeds == (0, 1, 2)
    assert four.workdir == "convergence" and four.models == ("scattering4",) and four.recipe == "seed002_nowd"
    assert four.seeds == (0, 1, 2) and four.save_epochs == (0, 1, 2, 5, 10, 20, 50, 100)
    assert [len(part.widths) for part in sweeps] == [9, 7]


def test_demo_grid_trains_each_run_once_for_every_paper_that_measures_it():
    parts = plan.resolve_grid(reproduce.parse_args([]))
    assert [(p.models, p.papers) for p in parts] == [(("resnet18",), ("000", "004", "003")),
                                                     (("rainbow_mlp",), ("002",))]
    (seed003,) = plan.resolve_grid(reproduce.parse_args(["--paper", "003"]))
    assert seed003.models == ("resnet20",) and seed003.papers == ("003",)
    (seed002,) = plan.resolve_grid(reproduce.parse_args(["--paper", "002"]))
    assert seed002.models == ("rainbow_mlp", "rainbow_cnn") and seed002.recipe == "seed002_tutorial"
    (merged,) = plan.resolve_grid(reproduce.parse_args(["--models", "lenet", "--num_seed", "2"]))
    assert merged.papers == ("000", "004", "003", "002") and merged.seeds == (0, 1)


def test_unknown_stage_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "reproduce.py", "--stages", "bogus", "--workdir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "bogus" in result.stderr


def test_a_chain_held_by_another_process_is_left_alone(tmp_path, capsys):
    """Two reproduce.py processes on one workdir: a chain locked by one is not run by the other."""
    lock = RunDir.of(tmp_path, "digits", "lenet", 0).root / "logs" / ".lock"
    with commands.exclusive(lock) as acquired:
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
        return commands.Command(name, [str(script)], None, tmp_path / f"{name}.log")

    saved = command("train", "raise SystemExit(143)")  # train_classifier.py after saving last.pt
    killed = command("analyzing", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    after = command("extract", "pass")
    commands.Chain("digits/lenet/rnd0", tmp_path / ".lock", [saved])()
    chain = commands.Chain("digits/lenet/rnd1", tmp_path / ".lock1", [killed, after])()
    assert saved.status == killed.status == "interrupted" and after.status == "pending"
    assert reproduce.summarize([saved, killed, after]) == 1
    out = capsys.readouterr().out
    assert "0 failed, 2 interrupted" in out and "INTERRUPTED analyzing (rerun" in out
    delayed = chain.checkpoint()
    assert delayed.function is chain
    again = pickle.loads(pickle.dumps(chain))
    assert not commands.RUNNING and [c.status for c in again.commands] == ["interrupted", "pending"]
    again()  # a requeued attempt retries the interrupted stage
    assert [c.status for c in again.commands] == ["interrupted", "pending"]


@pytest.mark.slow
def test_the_runner_works_from_any_folder(tmp_path):
    """`python /path/to/reproduce.py` from a scratch folder (as on a cluster): the relative --workdir, the logs and
    the stages are the user's folder's, and the stages run."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--paper", "000", *GRID, "--seeds", "0",
                             "--workdir", "w"], cwd=scratch, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run = RunDir.of(scratch / "w", "digits", "lenet", 0)
    assert len(run.train_log.read_text().splitlines()) == 2       # header and the one epoch
    assert "Traceback" not in (run.root / "logs" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_reproduce_stops_its_running_stage_which_saves(tmp_path, signum, status):
    """`kill PID` (SIGTERM) or SIGINT to reproduce.py alone reaches its forked stage too: training saves last.pt
    and stops (no orphan keeps training), nothing new starts, and the grid exits 143 (saying to rerun) or 130.
    reproduce.py is started with SIGINT ignored, as every background job of a non-interactive shell is."""
    run = RunDir.of(tmp_path, "digits", "lenet", 0)
    grid = subprocess.Popen([sys.executable, str(ROOT / "reproduce.py"), "--paper", "000", "--workdir", str(tmp_path),
                             *GRID[:2], "--seeds", "0", "--epochs", "500", *GRID[4:]], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = run.train_log
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) > 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    grid.send_signal(signum)
    out, _ = grid.communicate(timeout=120)
    assert grid.returncode == status, out
    if signum == signal.SIGTERM:
        assert "INTERRUPTED train" in out and "0 failed, 1 interrupted" in out
    assert run.last.is_file()
    epochs = len(log.read_text().splitlines())
    time.sleep(3)
    assert len(log.read_text().splitlines()) == epochs < 501  # the stage stopped with reproduce.py


def test_local_grid_runs_a_group_stage_once_its_group_is_done_ahead_of_other_chains(tmp_path):
    """run_local: the chains of a group with a group stage go first, its stage runs as soon as they are done (before
    the other group's chains), and is skipped (left pending) when one of its chains failed."""
    order = tmp_path / "order.txt"

    def command(name, group, fail=False):
        script = tmp_path / f"{name}.py"
        script.write_text(f"open({str(order)!r}, 'a').write('{name} ')\n" + ("raise SystemExit(1)\n" if fail else ""))
        return commands.Command(name, [str(script)], None, tmp_path / f"{name}.log", group=tmp_path / group)

    def chain(name, group, fail=False):
        lock = tmp_path / group / name / "logs" / ".lock"
        lock.parent.mkdir(parents=True)
        return commands.Chain(f"{group}/{name}", lock, [command(name, group, fail)])

    for jobs, broken in ((1, False), (2, False), (1, True)):
        order.write_text("")
        chains = [chain(f"b{i}", f"B{jobs}{broken}") for i in range(2)]
        chains += [chain(f"a{i}", f"A{jobs}{broken}", fail=broken and i == 1) for i in range(2)]
        stage = command("gA", f"A{jobs}{broken}")
        local.run_local(chains, [stage], jobs)
        ran = order.read_text().split()
        if broken:
            assert ran == ["a0", "a1", "b0", "b1"] and stage.status == "pending"
        else:
            assert stage.status == "done" and ran.index("gA") > max(ran.index("a0"), ran.index("a1"))
        if jobs == 1 and not broken:
            assert ran == ["a0", "a1", "gA", "b0", "b1"]


def _flag(argv: list[str], flag: str) -> list[str]:
    """The values after `flag` in an argv (up to the next flag); [] when absent."""
    if flag not in argv:
        return []
    values = []
    for word in argv[argv.index(flag) + 1:]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


def test_full_grid_of_002_lists_every_experiment_set(tmp_path, capsys):
    """seed002 §4 "Experiment sets", each in its own workdir (a run's path names neither width nor recipe): 50 J8
    seeds; 50 4-block nowd seeds at s = 1 keeping the dynamics epochs (covariance convergence over M = 1/10/50 and
    net 1's dynamics, issue 28 items 7-8); 10 seeds x 9 widths of scattering4 (nowd); J8 plain and skip at 7 widths;
    every width's rainbow stage, then one rainbow-width per swept model over the other widths. The 4-block nets are
    said to be built without N (item 6; the model itself: tests/models/test_rainbow_models.py)."""
    import shlex
    from collections import Counter

    root = str(tmp_path)
    assert reproduce.main(["--paper", "002", "--full", "--print", "--workdir", root]) == 0
    out, err = capsys.readouterr()
    assert "ResNet-18 ImageNet" in err    # the part left out is said
    assert err.count("'scattering4' 4-block nets WITHOUT N") == 2
    argvs = [shlex.split(line)[1:] for line in out.strip().splitlines()]

    def where(argv):
        return str(Path(_flag(argv, "--workdir")[0]).relative_to(root))

    trains = [a for a in argvs if a[0] == "train_classifier.py"]
    sets = Counter((where(a), _flag(a, "--model-name")[0], _flag(a, "--recipe")[0], float(_flag(a, "--width")[0]),
                    " ".join(_flag(a, "--save-epochs"))) for a in trains)
    expected = {(".", "scattering", "seed002", 1.0, ""): 50,
                ("convergence", "scattering4", "seed002_nowd", 1.0, "0 1 2 5 10 20 50 100"): 50}
    for k in range(-3, 6):
        expected[(f"scalewidth/width{2.0 ** k:g}", "scattering4", "seed002_nowd", 2.0 ** k, "")] = 10
    for k in range(-3, 4):
        for model in ("scattering", "scattering_skip"):
            expected[(f"j8width/width{2.0 ** k:g}", model, "seed002", 2.0 ** k, "")] = 2
    assert dict(sets) == expected
    assert all(_flag(a, "--epochs") == ["150"] and _flag(a, "--traindata") == ["cifar10"] for a in trains)
    runs = [(where(a), _flag(a, "--model-name")[0], _flag(a, "--seed")[0]) for a in trains]
    assert len(set(runs)) == len(runs) == 218   # no two trainings share a run directory

    rainbows = [(i, a) for i, a in enumerate(argvs) if a[0] in ("rainbow.py", "rainbow_width.py")]
    assert all((a[0] == "rainbow_width.py") == ("--sweep_workdirs" in a) for _, a in rainbows)
    groups = Counter((where(a), _flag(a, "--model-name")[0]) for _, a in rainbows if "--sweep_workdirs" not in a)
    assert len(groups) == 1 + 1 + 9 + 2 * 7 and set(groups.values()) == {1}
    assert all("--retrain_epochs" in a for _, a in rainbows if "--sweep_workdirs" not in a)   # the retrained row
    sweeps = {_flag(a, "--model-name")[0]: (i, a) for i, a in rainbows if "--sweep_workdirs" in a}
    assert sorted(sweeps) == ["scattering", "scattering4", "scattering_skip"]
    for model, (folder, widths) in {"scattering4": ("scalewidth", range(-3, 6)),
                                    "scattering": ("j8width", range(-3, 4)),
                                    "scattering_skip": ("j8width", range(-3, 4))}.items():
        index, sweep = sweeps[model]
        workdirs = [f"{folder}/width{2.0 ** k:g}" for k in widths]
        assert where(sweep) == workdirs[-1]     # in the widest workdir, over the others
        assert [str(Path(w).relative_to(root)) for w in _flag(sweep, "--sweep_workdirs")] == workdirs[:-1]
        assert _flag(sweep, "--seeds") == [str(s) for s in range(10 if model == "scattering4" else 2)]
        before = {where(a) for i, a in rainbows if i < index and _flag(a, "--model-name") == [model]
                  and "--sweep_workdirs" not in a}
        assert set(workdirs) <= before          # after every width's rainbow stage
    averaged = {where(a) for a in argvs if a[0] == "averaging.py"}
    assert averaged == {where(a) for a in trains} and argvs[-1][0] == "averaging.py"


def test_widths_sweep_the_demo_in_one_workdir_per_width(tmp_path, capsys):
    assert reproduce.main(["--paper", "002", "--models", "rainbow_mlp", "--widths", "2", "0.5", "--num_seed", "2",
                           "--workdir", str(tmp_path), "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    trains = [line for line in lines if "train_classifier.py" in line]
    assert len(trains) == 4 and sum(f"{tmp_path}/width0.5 " in t and "--width 0.5" in t for t in trains) == 2
    sweep = [line for line in lines if "--sweep_workdirs" in line]
    assert sweep == [f"python rainbow_width.py --model-name rainbow_mlp --traindata digits --seeds 0 1 --workdir "
                     f"{tmp_path}/width2 --device auto --data-root data --sweep_workdirs {tmp_path}/width0.5"]
    assert lines.index(sweep[0]) > max(i for i, line in enumerate(lines) if line.startswith("python rainbow.py")
                                       and "--sweep_workdirs" not in line)


def _device_recording_chains(tmp_path: Path, count: int, seconds: float) -> tuple[list, Path]:
    """`count` chains of one stage that sleeps `seconds` and appends to the returned file the device it sees, its
    start and end times and its memory fraction."""
    seen = tmp_path / "seen.txt"
    script = tmp_path / "stage.py"
    script.write_text(f"import os, time\nstart = time.time()\ntime.sleep({seconds})\n"
                      f"open({str(seen)!r}, 'a').write(f\"{{os.environ.get('CUDA_VISIBLE_DEVICES')}} {{start}} "
                      "{time.time()} {os.environ.get('DIMTOOLKIT_GPU_MEMORY_FRACTION')}\\n\")\n")
    chains = []
    for index in range(count):
        lock = tmp_path / f"g{index}" / "rnd0" / "logs" / ".lock"
        lock.parent.mkdir(parents=True)
        chains.append(commands.Chain(f"g{index}", lock, [commands.Command("stage", [str(script)], None,
                                                                          lock.parent / "stage.log")]))
    return chains, seen


def _overlapping_runs_see_different_devices(seen: Path) -> list[tuple]:
    """The recorded runs (device, start, end, fraction), once checked: some overlapped, and no two overlapping
    ones saw the same device."""
    runs = [(device, float(start), float(end), fraction) for device, start, end, fraction in
            (line.split() for line in seen.read_text().splitlines())]
    overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert overlapping and all(a[0] != b[0] for a, b in overlapping)
    return runs


def test_running_tasks_share_the_cores(monkeypatch):
    """ThreadShare: cores / min(jobs, tasks running) threads per stage; OMP_NUM_THREADS caps the cores."""
    monkeypatch.setattr(commands.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    share = commands.ThreadShare()
    share.jobs = 2
    share.change(+1)
    assert share.threads() == 8        # alone: every core
    share.change(+1)
    assert share.threads() == 4
    share.change(+1)                   # never more tasks than jobs at once; still half each
    assert share.threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert share.threads() == 1
    share.jobs = 1
    assert share.threads() == 2


def test_each_running_stage_sees_a_gpu_of_its_own(tmp_path, monkeypatch):
    """issue 27: with CUDA_VISIBLE_DEVICES=0,1,2 and 3 workers, every stage that runs at the same time as another sees
    one device, never the other's; --jobs defaults to the GPU slots and --jobs-per-gpu 2 shares each device by two,
    each held to half its memory (no GPU needed: the stages only report what they see)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    try:
        assert local.place_devices("local", "auto", None, 2) == 6
        with commands.DEVICES.placed() as env:
            assert env["DIMTOOLKIT_GPU_MEMORY_FRACTION"] == "0.5" and env["CUDA_VISIBLE_DEVICES"] in "012"
        assert local.place_devices("local", "auto", None, 1) == 3
        chains, seen = _device_recording_chains(tmp_path, 6, 0.4)
        local.run_local(chains, [], 3)
        assert [c.commands[0].status for c in chains] == ["done"] * 6
        runs = _overlapping_runs_see_different_devices(seen)
        assert {device for device, *_ in runs} <= {"0", "1", "2"} and all(f == "None" for *_, f in runs)
    finally:
        commands.DEVICES.configure([])


@pytest.mark.slow
def test_submitit_local_gives_each_running_chain_a_gpu_of_its_own(tmp_path, monkeypatch):
    """issue 27: submitit's local executor runs --jobs chains at once (the GPU slots by default), and the stages of
    chains running at the same time see different single devices (submitit itself would hide them all)."""
    from pipeline import slurm

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    args = reproduce.parse_args(["--launcher", "submitit-local", "--workdir", str(tmp_path)])
    args.jobs = local.place_devices(args.launcher, args.device, args.jobs, args.jobs_per_gpu)
    try:
        assert args.jobs == 2
        chains, seen = _device_recording_chains(tmp_path, 4, 3)
        ran = slurm.launch_local(chains, args)
        assert [c.commands[0].status for c in ran] == ["done"] * 4
        runs = _overlapping_runs_see_different_devices(seen)
        assert sorted(device for device, *_ in runs) == ["0", "0", "1", "1"]
    finally:
        commands.DEVICES.configure([])


def test_stages_side_by_side_never_report_a_spurious_failure(tmp_path):
    """Before stages were unregistered from multiprocessing after start, a start() in one worker could read another
    running stage's exit status first, and that stage reported 255 (failed) in 10-20% of such grids: 15 grids of 6
    short stages on 3 workers must all finish done."""
    script = tmp_path / "stage.py"
    script.write_text("import time\ntime.sleep(0.02)\n")
    for grid in range(15):
        chains = []
        for index in range(6):
            lock = tmp_path / f"grid{grid}" / f"g{index}" / "rnd0" / "logs" / ".lock"
            lock.parent.mkdir(parents=True)
            chains.append(commands.Chain(f"g{index}", lock, [commands.Command("stage", [str(script)], None,
                                                                              lock.parent / "stage.log")]))
        local.run_local(chains, [], 3)
        assert [c.commands[0].status for c in chains] == ["done"] * 6, grid


def test_slurm_jobs_of_the_default_grid_depend_on_what_they_need():
    """issue 27: on Slurm every stage is a job; rainbow waits for (afterok) exactly its group's five chains, the
    extraction of the group's runs (one job) for those and rainbow, averaging for (afterany) every other job of its
    workdir; a width sweep's averaging only for its own width's."""
    from pipeline import slurm

    def graph(*flags):
        args = reproduce.parse_args(["--workdir", "w", *flags])
        chains, group_cmds, final = plan.build_plan(args, plan.resolve_grid(args))
        return {job.label: job for job in slurm.grid_jobs(chains, group_cmds, final, Path("w"))}

    jobs = graph()
    mlp = [f"digits/rainbow_mlp/rnd{seed}" for seed in range(5)]
    assert list(jobs) == ["digits/resnet18/rnd0", "digits/resnet18/rnd1", *mlp, "rainbow digits/rainbow_mlp",
                          "extract digits/rainbow_mlp", "average ."]
    needs = {label: [need.label for need in job.needs] for label, job in jobs.items()}
    assert all(needs[label] == [] for label in ["digits/resnet18/rnd0", "digits/resnet18/rnd1", *mlp])
    assert needs["rainbow digits/rainbow_mlp"] == mlp
    assert needs["extract digits/rainbow_mlp"] == [*mlp, "rainbow digits/rainbow_mlp"]
    assert [c.argv[c.argv.index("--seed") + 1] for c in jobs["extract digits/rainbow_mlp"].chain.commands] == \
        ["0", "1", "2", "3", "4"]
    assert needs["average ."] == list(jobs)[:-1] and jobs["average ."].any_end
    assert not any(job.any_end for label, job in jobs.items() if label != "average .")

    sweep = graph("--paper", "002", "--models", "rainbow_mlp", "--num_seed", "2", "--widths", "1", "2")
    width1 = ["width1/digits/rainbow_mlp/rnd0", "width1/digits/rainbow_mlp/rnd1", "rainbow width1/digits/rainbow_mlp",
              "extract width1/digits/rainbow_mlp"]
    assert [n.label for n in sweep["average width1"].needs] == width1
    assert set(width1) < {n.label for n in sweep["rainbow-width width2/digits/rainbow_mlp"].needs}
    assert "rainbow-width width2/digits/rainbow_mlp" in [n.label for n in sweep["average width2"].needs]


def test_a_slurm_task_uses_its_allocation_not_the_nodes_cores(monkeypatch):
    """issue 27: on an 8-core node a task of --cpus-per-task 2 (SLURM_CPUS_PER_TASK, where Slurm does not bind it
    to its cores) gives its stages 2 threads and image-folder loading 2 workers; outside Slurm, the affinity."""
    from datasets.folders import FolderData
    from utils.cpus import allotted_cpus

    monkeypatch.setattr(commands.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    folder = FolderData("images", "train", Path("."), ["a"], [(torch.zeros(3, 2, 2), 0)])
    assert allotted_cpus() == 2 and commands.ThreadShare().threads() == 2 and folder.loader().num_workers == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allotted_cpus() == 8 and commands.ThreadShare().threads() == 8 and folder.loader().num_workers == 4


@pytest.mark.parametrize("paper", ["000", "002", "003", "004"])
def test_full_print_says_each_published_set_and_the_label_its_report_rows_carry(tmp_path, capsys, paper):
    """issue 28: --full --print names every part of the published grid with the protocol its report gives it."""
    from pipeline.grid import FULL_GRIDS

    plan.resolve_grid(reproduce.parse_args(["--paper", paper, "--full", "--print", "--workdir", str(tmp_path)]))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: seed") and " set" in line]
    grid = FULL_GRIDS[paper]
    assert len(notes) == len(grid if isinstance(grid, tuple) else (grid,))
    assert all("(report: paper" in note for note in notes), notes
