"""Run the fixed order train -> measure -> extract -> average over a grid, locally or on Slurm.

    python reproduce.py                                  # the demo: every implemented paper on digits
    python reproduce.py --paper 000 --full --launcher slurm --partition gpu --gpus-per-task 1
    python reproduce.py --traindata cifar10 --models vgg13 resnet18 --num_seed 3 --epochs 200 --print

A grid is one or more parts, each datasets x models x seeds trained one way (DEMO_GRIDS, FULL_GRIDS; the
flags override every part), in --workdir or a sub-workdir of its own (a run's path names neither width nor recipe);
a width sweep (--widths, seed002's full grid) is a part trained in one workdir per width, <workdir>/width<s>,
whose sweep stage (rainbow-width) runs once every width is done. Each (dataset, model, seed) is one chain of
commands: train, the per-run measurement stages of the papers that measure it, extract. Stages that combine
seeds (rainbow) run once all chains of their (dataset, model) are done, and averaging (once per workdir) runs
last. A stage whose _done.json records the same command line is skipped, so an interrupted grid resumes where it
stopped; training itself resumes from last.pt. Each command's output goes to <run>/logs/<stage>.log. Commands
run as forks of one process that imported torch once (pipeline/stage_process.py): `--print` shows them as the
equivalent `python SCRIPT ...` lines, which behave the same.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path

from tqdm import tqdm

from pipeline import contract
from pipeline.stage_process import StageProcess
from utils.cli import EXIT_INTERRUPTED, ToolkitParser, finite_float, non_negative_float, positive_float, run_main
from utils.errors import ToolkitError
from utils.io import load_json
from utils.rundir import DONE_FILE, RunDir, report_dir, run_variant

ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Scheduled:
    """A stage of the contract (pipeline.contract: script, folder, scope, paper) and the flags the grid adds to it
    in the demo and in the published (--full) grid."""

    stage: contract.Stage
    demo: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    ood: bool = False   # takes the grid's --ood-sets, --near-ood and --validation-ood (pipeline.evaluation)
    sweep_flag: str = ""  # a stage of a width sweep (GridPart.widths): runs once, in the widest width's workdir,
                          # after every width's chains and group stages, given the others' workdirs by this flag
    demo_seeds: int | None = None  # the demo runs this stage for the part's first N seeds only (None: every seed)

    @property
    def name(self) -> str:
        return self.stage.name

    def argv(self, mode: str) -> list[str]:
        """script, subcommand, the folder-selecting flags and the grid's flags (run identity flags excluded)."""
        return [self.stage.script, *self.stage.subcommand, *self.stage.flags, *getattr(self, mode)]


def _scheduled(name: str, demo: tuple[str, ...] = (), full: tuple[str, ...] = (), ood: bool = False,
               sweep_flag: str = "", demo_seeds: int | None = None) -> Scheduled:
    return Scheduled(contract.stage(name), demo, full, ood, sweep_flag, demo_seeds)


# seed000 §6: every one of the 53 thresholds (analyzing.py's default), 10,000 Gram and noise samples, every variant
# perturbed, batches of 128 (BN in eval mode: the batch size changes nothing but the speed); the demo caps them
# (each stage records its caps in _done.json)
SEED000_FULL = ("--batchsize", "128")
STAGES: tuple[Scheduled, ...] = (
    _scheduled("analysis", demo=("--ratios", "6", "--max-samples", "150", "--num_grams", "150", "--num_stability",
                                 "50", "--stability_variants", "original"),
               full=(*SEED000_FULL, "--ratios", "53", "--num_grams", "10000", "--num_stability", "10000",
                     "--stability_variants", "every"), ood=True),
    _scheduled("features", full=SEED000_FULL, ood=True),
    _scheduled("kernels"),
    # seed004: probes carry the run's training noise (Fig. 1/10, corrupt_test 1; nothing at sigma 0); by layer with
    # 100 probes per pass (memory; trained numbers do not depend on it); init at the output on one 500-probe BN batch
    _scheduled("stability", demo=("--by_layer", "--P", "100", "--corrupt_test"),
               full=("--by_layer", "--P", "500", "--batchsize", "100", "--corrupt_test")),
    _scheduled("stability-init", demo=("--by_layer", "--P", "100", "--corrupt_test"),
               full=("--P", "500", "--corrupt_test")),
    _scheduled("stability-shuffled", demo=("--by_layer", "--P", "100", "--corrupt_test"),
               full=("--by_layer", "--P", "500", "--batchsize", "100", "--corrupt_test")),
    _scheduled("laplacian"),
    # the 1-D net of §2.12 is trained by the stage itself (the run's net is not read): one seed in the demo
    _scheduled("scale1d", full=("--scale1d_channels", "1000"), demo_seeds=1),
    _scheduled("decompose-indices"),
    _scheduled("decompose-validate"),
    _scheduled("decompose-essential"),
    _scheduled("decompose-finetune", demo=("-k", "5", "--epochs", "1"), full=("--epochs", "10")),
    _scheduled("rainbow", demo=("--num_samples", "5", "--clip_points", "26", "--retrain_epochs", "2"),
               full=("--num_samples", "10", "--batchsize", "64", "--retrain_epochs", "150")),
    _scheduled("rainbow-width", full=("--batchsize", "64"), sweep_flag="--sweep_workdirs"),
)


@dataclass(frozen=True)
class GridPart:
    """One block of a grid: datasets x models x seeds trained one way, then measured by the stages of `papers`."""

    traindata: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    width: float
    recipe: str | None
    papers: tuple[str, ...]
    corruptions: tuple[float, ...] = (0.0,)   # seed004 §2.7: one run per Gaussian corruption std (a sigma sweep)
    stages: tuple[str, ...] | None = None     # the stages of `papers` this part runs (None: all of them)
    # A run's path names neither its recipe nor its width (utils.rundir.run_variant), so a part that trains the
    # runs of another part differently lives in its own sub-workdir <--workdir>/<workdir> ("": --workdir itself).
    workdir: str = ""
    save_epochs: tuple[int, ...] = ()          # train_classifier.py --save-epochs (seed002 §5.6 training dynamics)
    widths: tuple[float, ...] = ()             # a width sweep: the part trained at each width (`width` unused), each
                                               # in <workdir>/width<s>, then the sweep stages (rainbow-width)
    selectivity_regs: tuple[float, ...] = (0.0,)   # seed003 §10: one run per selectivity regulariser alpha

    def training(self) -> tuple:
        return self.epochs, self.width, self.recipe, self.save_epochs

    def members(self, root: str) -> list[tuple[str, GridPart]]:
        """(workdir, part trained at one width) for each width of a sweep, ascending; [(workdir, self)] otherwise.
        The workdir of a part in --workdir itself is `root` as given (commands, and their _done.json, unchanged)."""
        here = str(Path(root) / self.workdir) if self.workdir else root
        if not self.widths:
            return [(here, self)]
        return [(str(Path(here) / f"width{s:g}"), replace(self, width=s, widths=())) for s in sorted(self.widths)]


SEED004_SIGMAS = (0.0, 1e-2, 1e-1, 1.0, 10.0, 30.0, 100.0)   # seed004 §1 Fig. 1/10: training corruption stds
SEED002_EPOCHS = (0, 1, 2, 5, 10, 20, 50, 100)               # seed002 §4: the kept checkpoints
# The published grids (specs: seed000 §3-§4, seed004 §1 and §3, seed003 §3, seed002 §4); a paper may have parts.
FULL_GRIDS = {
    "000": GridPart(("cifar10", "cifar100", "svhn", "mnist"), ("vgg13", "vgg16", "resnet18", "resnet34"),
                    tuple(range(10)), 1200, 1.0, "seed000", ("000",)),
    "004": (  # seed004 README (experiments.md): Fig. 1/10 (CNNs, FCNs), Fig. 3/11, Fig. 5-9 (twopoints: ptr 1024)
        GridPart(("cifar10",), ("vgg11_nobn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "alexnet",
                                "lenet", "efficientnet_b0"), tuple(range(4)), 250, 1.0, "seed004", ("004",),
                 SEED004_SIGMAS, ("stability", "stability-init", "stability-shuffled", "laplacian")),
        GridPart(("cifar10",), ("fcn2", "fcn4", "fcn6"), tuple(range(11)), 250, 1.0, "seed004_fcn", ("004",),
                 SEED004_SIGMAS, ("stability", "stability-init")),
        GridPart(("twopoints",), ("vgg11_nobn", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34",
                                  "resnet50", "alexnet", "lenet", "efficientnet_b0"), tuple(range(10)), 300, 1.0,
                 "twopoints", ("004",)),
    ),
    "003": GridPart(("cifar10",), ("resnet20",), (0,), 200, 1.0, "akamaster", ("003",)),
    "002": (  # seed002 §4 "Experiment sets"
        # 50 seeds of the J8 net ("gaussiantest", wd 1e-4): alignment, C_j, rainbow nets (+ retrained), clipping
        GridPart(("cifar10",), ("scattering",), tuple(range(50)), 150, 1.0, "seed002", ("002",)),
        # 50 seeds of J8 "nowd", the epochs of the training dynamics kept (§5.6: a_r(t), c_r(t))
        GridPart(("cifar10",), ("scattering",), tuple(range(50)), 150, 1.0, "seed002_nowd", ("002",),
                 workdir="nowd", save_epochs=SEED002_EPOCHS),
        # 10 seeds x 9 widths of the 4-block scale-width nets, nowd (covariance convergence against width, ref 2^5)
        GridPart(("cifar10",), ("scattering4",), tuple(range(10)), 150, 1.0, "seed002_nowd", ("002",),
                 workdir="scalewidth", widths=tuple(2.0 ** k for k in range(-3, 6))),
        # J8 plain and skip at s = 2^-3..2^3 (resampling and alignment against width, ref 2^3): the paper trains
        # 1 net per width, the rainbow stage here needs 2 seeds
        GridPart(("cifar10",), ("scattering", "scattering_skip"), (0, 1), 150, 1.0, "seed002", ("002",),
                 workdir="j8width", widths=tuple(2.0 ** k for k in range(-3, 4))),
    ),
}
# What a published grid leaves out, and why (said by --full and --help).
FULL_GRID_GAPS = {
    "002": "seed002's ResNet-18 ImageNet widths (s = 2^-3..2^3, spec §4) are left out: train_classifier.py and "
           "rainbow.py need in-memory datasets (ImageNet is streamed from folders), and the paper's ResNet-18 variant "
           "(no biases, non-affine BN after ReLU) is not a registry model",
}
# One paper's demo on the bundled digits (a few minutes on 2 CPU cores); seed003's is its own resnet20,
# seed002's the tutorial MLP and CNN.
DEMO_GRIDS = {
    "000": GridPart(("digits",), ("resnet18",), (0, 1), 5, 0.25, None, ("000",)),
    "004": GridPart(("digits",), ("resnet18",), (0, 1), 5, 0.25, "seed004", ("004",), (0.0, 10.0, 30.0)),
    "003": GridPart(("digits",), ("resnet20",), (0, 1), 15, 1.0, None, ("003",)),
    "002": GridPart(("digits",), ("rainbow_mlp", "rainbow_cnn"), (0, 1, 2, 3, 4), 5, 1.0, "seed002_tutorial",
                    ("002",)),
}
# The default demo (`python reproduce.py`): every paper in about 5 minutes, so one ResNet-18 serves 000, 004, 003
# and seed002 takes the MLP only.
ALL_PAPERS_DEMO = (replace(DEMO_GRIDS["000"], papers=("000", "004", "003")),
                   replace(DEMO_GRIDS["002"], models=("rainbow_mlp",)))
PAPER_ORDER = ("000", "004", "003", "002")


@dataclass
class Command:
    stage: str
    argv: list[str]
    done_dir: Path | None  # None: always run (averaging)
    log: Path
    group: Path | None = None  # the <dataset>/<model> folder a group stage or its extraction needs complete
    needs: tuple[Path, ...] = ()  # other such folders it needs complete (a width sweep: every other width's)
    # done | skipped | failed | interrupted (stopped by SIGTERM: Slurm requeue, pre-emption, time limit; the same
    # command continues) | busy (another process holds the chain) | pending (not reached)
    status: str = "pending"
    seconds: float = 0.0

    def shell(self) -> str:
        return shlex.join(["python", *self.argv])

    def is_done(self) -> bool:
        if self.done_dir is None:
            return False
        marker = self.done_dir / DONE_FILE
        if not marker.is_file():
            return False
        try:
            return load_json(marker).get("argv") == self.argv[1:]
        except ToolkitError:
            return False


@dataclass
class Chain:
    """The commands of one run (lock: <run>/logs/.lock), in order; a failure or an interruption stops the chain.

    Submitted to Slurm as it is (submitit pickles it), so submitit sees `checkpoint`: at the time-limit or
    pre-emption signal the running stage is stopped with SIGTERM (training saves last.pt) and the chain is
    requeued; the next attempt skips finished stages and training resumes. A stage that Slurm itself stops
    (`scontrol requeue`, pre-emption) ends the attempt without a result, so reproduce.py waits for the next one."""

    label: str
    lock: Path
    commands: list[Command] = field(default_factory=list)
    since: float = field(default_factory=time.time)  # stages finished after this were done by this grid

    def __post_init__(self):
        self._running: StageProcess | None = None  # the stage in progress, for checkpoint()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_running"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._running = None

    def __call__(self, progress=None) -> Chain:
        for command in self.commands:  # a requeued attempt retries what the previous one did not finish
            if command.status in ("interrupted", "busy"):
                command.status = "pending"
        with exclusive(self.lock) as acquired:
            if not acquired:  # another reproduce.py process is running this chain
                for command in self.commands:
                    command.status = "busy"
            for command in self.commands:
                if command.status == "pending":
                    if STOPPING.is_set():  # stop_on_sigterm: start nothing new
                        command.status = "interrupted"
                    else:
                        run_command(command, self)
                if progress is not None:
                    progress.update(1)
                if command.status in ("failed", "interrupted"):
                    break
        if _in_slurm_job() and any(c.status == "interrupted" for c in self.commands):
            _end_interrupted_attempt()
        return self

    def checkpoint(self, *args, **kwargs):
        """submitit's hook for Slurm's time-limit / pre-emption signal: stop the running stage as Slurm would
        (SIGTERM: training saves last.pt and exits), then requeue this chain. submitit requeues the job and ends
        this attempt; the next one skips the finished stages and training resumes from last.pt."""
        import submitit

        running = self._running
        if running is not None:
            with contextlib.suppress(ProcessLookupError):
                running.send_signal(signal.SIGTERM)
        if _in_slurm_job():
            _survive_own_requeue()
        return submitit.helpers.DelayedSubmission(self)


class ThreadShare:
    """The cores of a local grid shared among the tasks (chains, group stages) running in parallel (--jobs): a
    stage gets cores / min(jobs, tasks running) threads when it starts (torch.set_num_threads in the stage), so
    what runs alone (the last chain, averaging) gets every core; on Slurm a chain's stages get its job's cores.
    OMP_NUM_THREADS, when set, is the number of cores to share."""

    def __init__(self):
        self.jobs, self.running, self.lock = 1, 0, threading.Lock()
        self.cores: int | None = None   # fixed by main before it sets OMP_NUM_THREADS for the stage server

    def __getstate__(self) -> dict:  # submitit pickles the chains, and with them (reproduce.py is __main__) this
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    @staticmethod
    def usable_cores() -> int:
        return int(os.environ.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))  # a user's cap first

    def change(self, delta: int) -> None:
        with self.lock:
            self.running += delta

    def threads(self) -> int:
        return max(1, (self.cores or self.usable_cores()) // max(1, min(self.jobs, self.running)))


@contextlib.contextmanager
def server_blas_threads(threads: int):
    """OMP_NUM_THREADS = `threads` for the stage server started inside (numpy's BLAS sizes its pool when imported
    there; torch's threads are set per stage by ThreadShare), unless the user set it; restored afterwards."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


THREADS = ThreadShare()
class StopFlag:
    """Set by SIGTERM (or Ctrl-C) to a local reproduce.py, with the stages running now (`running`, for
    stop_on_sigterm); a plain flag and no processes when pickled, as submitit pickles the chains that use it (a
    threading.Event holds a lock, a running stage its process)."""

    def __init__(self):
        self.stopping = False
        self.running: set[StageProcess] = set()

    def __getstate__(self) -> dict:
        return {"stopping": self.stopping}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, running=set())

    def set(self) -> None:
        self.stopping = True

    def clear(self) -> None:
        self.stopping = False

    def is_set(self) -> bool:
        return self.stopping


STOPPING = StopFlag()


def stop_on_sigterm(signum=None, frame=None) -> None:
    """The local launcher's SIGTERM handler (`kill` of reproduce.py, which, unlike Ctrl-C's SIGINT, reaches no
    stage): SIGTERM the running stages (training saves last.pt) and start nothing more, so the grid ends as
    'interrupted' and a rerun of the same command continues."""
    STOPPING.set()
    for process in list(STOPPING.running):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def _in_slurm_job() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def _survive_own_requeue() -> None:
    """Requeueing a job SIGTERMs all its processes, the `scontrol requeue` that asked for it included: when
    scontrol is slow to exit (a busy machine) it dies, and submitit takes that for a failed requeue and writes an
    error as the chain's result. Ignored signals are inherited, so ignoring SIGTERM here lets the scontrol
    started next finish; this process ends right after anyway (submitit exits, Slurm kills what is left)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _end_interrupted_attempt() -> None:
    """A stage of this Slurm job was stopped by SIGTERM: end this attempt without a result, so the reproduce.py
    waiting for it follows the job to its next attempt (or sees it end).

    When Slurm sent the SIGTERM because it is ending the job (`scontrol requeue`, a pre-emption that requeues,
    scancel, the time limit), the job is COMPLETING and Slurm decides what follows. When the job is still RUNNING
    (a pre-emption's notice ahead of its GraceTime, or a SIGTERM sent by hand), the chain requeues itself, as
    submitit does on its own signal; a cancelled job is never requeued."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # submitit's handler must not requeue a second time
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]
    try:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        state = ""
    if state == "RUNNING":
        _survive_own_requeue()
        requeue = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        state = f"RUNNING, requeued: {(requeue.stdout + requeue.stderr).strip() or 'ok'}"
    print(f"a stage was stopped by SIGTERM; ending this attempt of job {job_id} ({state or 'state unknown'})",
          file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def exclusive(path: Path):
    """A non-blocking exclusive flock on `path`; yields whether it was acquired (released on exit or death)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_command(command: Command, chain: Chain | None = None) -> None:
    if command.is_done():  # done before this grid began, or by an earlier attempt of this chain (requeued)
        finished = (command.done_dir / DONE_FILE).stat().st_mtime
        command.status = "done" if chain is not None and finished >= chain.since else "skipped"
        return
    command.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(command.log, "w") as log:
        log.write(f"$ {command.shell()}\n")
        log.flush()
        # In a Slurm job the time-limit signal (USR2) reaches every process of the job: the stage ignores it and
        # is stopped by Chain.checkpoint with SIGTERM instead, which it handles.
        process = StageProcess(command.argv, ROOT, command.log, ignore_usr2=_in_slurm_job(), threads=THREADS.threads())
        if chain is not None:
            chain._running = process
        STOPPING.running.add(process)
        if STOPPING.is_set():  # SIGTERM came while it was starting
            process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait()
        except BaseException:  # submitit ending this attempt for a requeue, or Ctrl-C: let the stage save first
            _stop(process)
            raise
        finally:
            STOPPING.running.discard(process)
            if chain is not None:
                chain._running = None
    command.seconds = time.perf_counter() - started
    if returncode == 0:
        command.status = "done"
    elif returncode in (EXIT_INTERRUPTED, -signal.SIGTERM):
        command.status = "interrupted"
    else:
        command.status = "failed"


def _stop(process: StageProcess, grace_s: float = 60.0) -> None:
    """SIGTERM the stage (training saves last.pt) and wait for it; SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper", choices=["000", "002", "003", "004", "all"], default="all",
                        help="which paper's stages to run (all: every implemented paper)")
    parser.add_argument("--full", action="store_true",
                        help="use the paper's published grid (datasets, models, seeds, epochs) instead of the demo; "
                             "002: its four experiment sets, each in its own workdir (README); "
                             + FULL_GRID_GAPS["002"])
    parser.add_argument("--traindata", nargs="+", default=None, help="datasets (demo: digits)")
    parser.add_argument("--models", nargs="+", default=None,
                        help="architectures (demo: resnet18; resnet20 for 003 alone; rainbow_mlp, rainbow_cnn for 002)")
    parser.add_argument("--num_seed", type=int, default=None, help="seeds 0..N-1 (demo: 2; 5 for 002)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="exactly these seeds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (demo: 5; 15 for 003 alone; 5 for 002)")
    widths = parser.add_mutually_exclusive_group()
    widths.add_argument("--width", type=float, default=None,
                        help="channel-width multiplier (demo: 0.25; 1 for 003 alone and 002)")
    widths.add_argument("--widths", type=positive_float, nargs="+", default=None, metavar="S",
                        help="a width sweep: every part trained at each width, in <workdir>/width<S>/, then (002) "
                             "rainbow.py's width stage over them in the widest one's workdir; e.g. --paper 002 "
                             "--widths 0.5 1 2 --num_seed 3 (default: none; with --full, 002 sweeps its "
                             "scattering4 and J8 nets)")
    parser.add_argument("--recipe", default=None, help="training recipe (see train_classifier.py --help)")
    parser.add_argument("--gaussian_corruption_std", type=non_negative_float, nargs="+", default=None, metavar="STD",
                        help="train one run per std of Gaussian corruption (seed004 §2.7: a sigma sweep; each lives in "
                             "<model>@sigma<std>/; default: 0, except --paper 004: 0 10 30 in the demo, the "
                             "paper's 0 0.01 0.1 1 10 30 100 with --full)")
    parser.add_argument("--ood-sets", nargs="+", default=None, metavar="NAME",
                        help="seed000: the reported OOD sets, passed to analyzing.py and features.py (registered "
                             "datasets or imagefolder:PATH; default: the paper's)")
    parser.add_argument("--near-ood", default=None, metavar="NAME", help="seed000: the near-OOD set among them")
    parser.add_argument("--validation-ood", default=None, metavar="NAME",
                        help="seed000: the set that chooses d and the rank threshold (default: <dataset>_vflip)")
    parser.add_argument("--selectivity_reg", type=finite_float, nargs="+", default=None, metavar="ALPHA",
                        help="seed003 §10: train one run per class-selectivity regulariser alpha (0 = plain; "
                             "each other lives in <model>@si<ALPHA>/, e.g. 0 -0.1 adds regularised nets that the "
                             "003 report compares with the plain ones; default: 0)")
    parser.add_argument("--stages", nargs="+", default=None,
                        help="only these stages (train, " + ", ".join(s.name for s in STAGES) + ", extract, average)")
    parser.add_argument("--workdir", default="runs", help="root of all run directories")
    parser.add_argument("--data-root", default="data", help="folder holding dataset files")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda, passed to every stage")
    parser.add_argument("--print", action="store_true", help="print the commands, one per line, without running them")
    parser.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                        help="local processes, Slurm job arrays through submitit, or submitit's local executor")
    parser.add_argument("--jobs", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="local launcher: chains and group stages (rainbow, once its seeds are done) run "
                             "side by side on N workers; a stage gets cores / (tasks running) threads, so what runs "
                             "alone (the last chain, averaging) gets every core (default: 2, or 1 on one core)")
    parser.add_argument("--partition", default=None, help="slurm: partition (default: the cluster's default)")
    parser.add_argument("--gpus-per-task", type=int, default=0, help="slurm: GPUs per task")
    parser.add_argument("--time", type=int, default=24 * 60,
                        help="slurm: time limit per task in minutes; a chain that needs longer is requeued")
    parser.add_argument("--mem", type=int, default=None,
                        help="slurm: memory per task in GB (default: the cluster's default per task)")
    parser.add_argument("--signal-delay", type=int, default=None,
                        help="slurm: seconds before --time at which Slurm signals a chain to save and requeue "
                             "(default: 90, or --time/10 when shorter; Slurm sends it up to a minute early)")
    parser.add_argument("--max-timeouts", type=int, default=3,
                        help="slurm: requeues after reaching --time before a chain is given up (pre-emptions "
                             "do not count)")
    parser.add_argument("--force", action="store_true", help="rerun stages even when done")
    args = parser.parse_args(argv)
    if args.widths is not None and len(set(args.widths)) < 2:
        parser.error("--widths needs at least 2 different widths (a single width: --width)")
    return args


def resolve_grid(args) -> list[GridPart]:
    """The demo grids of the chosen papers, or one paper's published grid with --full; flags override every part.

    Parts that train the same (dataset, model, seed) are merged into one training measured by all their papers,
    keeping the first part's epochs, width and recipe (a run directory holds one training)."""
    papers = list(PAPER_ORDER) if args.paper == "all" else [args.paper]
    if args.full and len(papers) > 1:
        raise ToolkitError("--full reproduces one paper at a time (each trains with its own recipe); add "
                           "--paper 000, 002, 003 or 004")
    if args.full:
        grids = [FULL_GRIDS[paper] for paper in papers]
        for paper in papers:
            if paper in FULL_GRID_GAPS:
                print(f"note: {FULL_GRID_GAPS[paper]}", file=sys.stderr)
        parts = [part for grid in grids for part in (grid if isinstance(grid, tuple) else (grid,))]
    else:
        parts = list(ALL_PAPERS_DEMO) if args.paper == "all" else [DEMO_GRIDS[args.paper]]
    overrides = {"traindata": args.traindata, "models": args.models, "epochs": args.epochs, "width": args.width,
                 "recipe": args.recipe, "corruptions": args.gaussian_corruption_std, "widths": args.widths,
                 "seeds": args.seeds or (list(range(args.num_seed)) if args.num_seed else None)}
    overrides = {key: tuple(value) if isinstance(value, list) else value for key, value in overrides.items()
                 if value is not None}
    if args.width is not None:  # one width for every part: no sweep
        overrides["widths"] = ()
    merged: list[GridPart] = []
    if args.selectivity_reg is not None:  # a seed003 experiment: the other papers' parts keep their plain runs
        if not any("003" in part.papers for part in parts):
            raise ToolkitError("--selectivity_reg is seed003's (§10); add --paper 003 or --paper all")
        parts = [replace(part, selectivity_regs=tuple(args.selectivity_reg)) if "003" in part.papers else part
                 for part in parts]
    for part in (replace(part, **overrides) for part in parts):
        for index, other in enumerate(merged):
            if _shares_runs(part, other):
                if part.training() != other.training():
                    print(f"note: paper {'/'.join(part.papers)} measures the runs of paper {'/'.join(other.papers)} "
                          f"(epochs {other.epochs}, width {other.width}, recipe {other.recipe or 'default'})",
                          file=sys.stderr)
                merged[index] = replace(other, traindata=_union([other.traindata, part.traindata]),
                                        models=_union([other.models, part.models]),
                                        seeds=_union([other.seeds, part.seeds]),
                                        papers=_union([other.papers, part.papers]))
                break
        else:
            merged.append(part)
    return merged


def _shares_runs(a: GridPart, b: GridPart) -> bool:
    return bool(set(a.traindata) & set(b.traindata) and set(a.models) & set(b.models) and set(a.seeds) & set(b.seeds)
                and set(a.corruptions) & set(b.corruptions) and set(a.selectivity_regs) & set(b.selectivity_regs)
                and a.workdir == b.workdir and a.widths == b.widths)


def available_stages(papers: list[str], only: list[str] | None) -> list[Scheduled]:
    """The stages of the chosen papers (only those named in --stages, when given)."""
    names = {s.name for s in STAGES} | {"train", "extract", "average"}
    unknown = sorted(set(only or ()) - names)
    if unknown:
        raise ToolkitError(f"unknown --stages {unknown}; choose among {sorted(names)}")
    return [s for s in STAGES if s.stage.paper in papers and (only is None or s.name in only)]


def build_plan(args, parts: list[GridPart]) -> tuple[list[Chain], list[Command], list[Command]]:
    """(per-run chains, group commands, final commands) for every part of the grid.

    A width sweep (GridPart.widths) is one part per width, each in its own workdir; its sweep stages
    (rainbow-width) follow the group stages of every width, in the widest one's workdir. Averaging runs once per
    workdir."""
    wanted = set(args.stages) if args.stages else None
    mode = "full" if args.full else "demo"
    chains, group_cmds = [], []
    averaged: dict[str, set[int]] = {}   # workdir -> the seeds trained there
    for part in parts:
        stages = [s for s in available_stages(list(part.papers), args.stages)
                  if part.stages is None or s.name in part.stages]
        group_stages = [s for s in stages if s.stage.scope == "group" and not s.sweep_flag]
        extract = wanted is None or "extract" in wanted
        members = part.members(args.workdir)
        for workdir, member in members:
            averaged.setdefault(workdir, set()).update(member.seeds)
            common = ["--workdir", workdir, "--device", args.device]
            for dataset, model, sigma, alpha in product(member.traindata, member.models, member.corruptions,
                                                        member.selectivity_regs):
                for seed in member.seeds:
                    chains.append(_chain(args, member, stages, Cell(dataset, model, seed, sigma, alpha), workdir, mode,
                                         common, wanted, extract and not group_stages))
                first = Cell(dataset, model, member.seeds[0], sigma, alpha)
                group = first.run(workdir)
                for scheduled in group_stages:
                    group_cmds.append(_group_command(args, scheduled, first, member.seeds, workdir, mode))
                if group_stages and extract:  # extraction reads the group stages' outputs too
                    group_cmds += [replace(_extract_command(replace(first, seed=seed), workdir, common),
                                           group=group.group) for seed in member.seeds]
        if len(members) < 2:
            continue
        (widest, _), others = members[-1], [workdir for workdir, _ in members[:-1]]
        for scheduled in (s for s in stages if s.sweep_flag):
            for dataset, model, sigma, alpha in product(part.traindata, part.models, part.corruptions,
                                                        part.selectivity_regs):
                first = Cell(dataset, model, part.seeds[0], sigma, alpha)
                command = _group_command(args, scheduled, first, part.seeds, widest, mode)
                command.argv += [scheduled.sweep_flag, *others]
                command.needs = tuple(first.run(workdir).group for workdir in others)
                group_cmds.append(command)
    final = []
    if wanted is None or "average" in wanted:
        for workdir, seeds in averaged.items():
            pdf = [] if args.full else ["--no-pdf"]   # the demo draws PNGs only (half the drawing time)
            final.append(Command("average", ["averaging.py", "--workdir", workdir, "--seeds",
                                              *map(str, sorted(seeds)), *pdf], None,
                                 report_dir(workdir) / "averaging.log"))
    return chains, group_cmds, final


def _group_command(args, scheduled: Scheduled, first: Cell, seeds: tuple[int, ...], workdir: str,
                   mode: str) -> Command:
    """A stage combining the seeds of first's (dataset, model) in `workdir`."""
    script, *rest = scheduled.argv(mode)
    common = ["--workdir", workdir, "--device", args.device]
    argv = [script, *first.identity(common, seeds=[str(s) for s in seeds]), "--data-root", args.data_root, *rest]
    group = first.run(workdir)
    return Command(scheduled.name, argv, scheduled.stage.dir(group), group.group / "logs" / f"{scheduled.name}.log",
                   group.group)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: dataset, model, seed and the run-defining corruption std and selectivity regulariser
    (utils.rundir.run_variant)."""

    dataset: str
    model: str
    seed: int
    corruption: float = 0.0
    selectivity_reg: float = 0.0

    def run(self, workdir: str) -> RunDir:
        return RunDir.of(workdir, self.dataset, self.model, self.seed,
                         run_variant(self.dataset, self.corruption, selectivity_reg=self.selectivity_reg))

    def identity(self, common: list[str], seeds: list[str] | None = None) -> list[str]:
        """The flags that name the run (or, with `seeds`, the group of those seeds), plus the workdir and device."""
        who = ["--seeds", *seeds] if seeds is not None else ["--seed", str(self.seed)]
        sigma = ["--gaussian_corruption_std", f"{self.corruption:g}"] if self.corruption else []
        sigma += ["--selectivity_reg", f"{self.selectivity_reg:g}"] if self.selectivity_reg else []
        return ["--model-name", self.model, "--traindata", self.dataset, *who, *sigma, *common]


def _chain(args, part: GridPart, stages: list[Scheduled], cell: Cell, workdir: str, mode: str, common: list[str],
           wanted: set[str] | None, extract: bool) -> Chain:
    """train -> the part's per-run stages -> extract (unless group stages come first), for one run."""
    run = cell.run(workdir)
    ident = cell.identity(common)
    chain = Chain(str(run.root.relative_to(args.workdir)), run.root / "logs" / ".lock")
    if wanted is None or "train" in wanted:
        train = ["train_classifier.py", *ident, "--epochs", str(part.epochs), "--width", str(part.width),
                 "--data-root", args.data_root, "--resume", "--no-progress"]
        if part.recipe:
            train += ["--recipe", part.recipe]
        if part.save_epochs:
            train += ["--save-epochs", *map(str, part.save_epochs)]
        if mode == "demo":   # the same training, its convolutions in channels_last layout: 1.36x on one CPU core
            train.append("--channels-last")
        chain.commands.append(Command("train", train, run.root, run.root / "logs" / "train.log"))
    for scheduled in (s for s in stages if s.stage.scope == "run"):
        if mode == "demo" and scheduled.demo_seeds is not None and cell.seed not in part.seeds[:scheduled.demo_seeds]:
            continue
        script, *rest = scheduled.argv(mode)
        argv = [script, *rest[:len(scheduled.stage.subcommand)], *ident, "--data-root", args.data_root,
                *rest[len(scheduled.stage.subcommand):]]
        if scheduled.ood:
            argv += ood_flags(args)
        chain.commands.append(Command(scheduled.name, argv, scheduled.stage.dir(run),
                                      run.root / "logs" / f"{scheduled.name}.log"))
    if extract:
        chain.commands.append(_extract_command(cell, workdir, common))
    return chain


def ood_flags(args) -> list[str]:
    """The grid's OOD-set flags, as the seed000 stages take them (only those given)."""
    flags = ["--ood-sets", *args.ood_sets] if args.ood_sets else []
    for flag, value in (("--near-ood", args.near_ood), ("--validation-ood", args.validation_ood)):
        if value:
            flags += [flag, value]
    return flags


def _extract_command(cell: Cell, workdir: str, common: list[str]) -> Command:
    run = cell.run(workdir)
    extract = contract.stage("extract")
    return Command(extract.name, [extract.script, *cell.identity(common)], extract.dir(run),
                   run.root / "logs" / "extract.log")


@dataclass
class _Task:
    """A chain, or a group stage with the tasks it waits for (run_local)."""

    chain: Chain | None
    command: Command | None = None
    needs: list[_Task] = field(default_factory=list)
    finished: bool = False

    def commands(self) -> list[Command]:
        return self.chain.commands if self.chain is not None else [self.command]

    def blocked(self) -> bool:
        """A finished task that failed, was interrupted, or left stages unreached (a skipped group stage)."""
        return any(c.status in ("failed", "interrupted", "pending") for c in self.commands())


def run_local(chains: list[Chain], group_cmds: list[Command], jobs: int) -> None:
    """The local launcher: the chains and the group stages on `jobs` worker threads.

    A group stage (rainbow, its runs' extraction) waits for every chain and earlier group stage of its group and
    of the groups it needs, and is skipped when one of them failed; once ready it goes ahead of the chains not
    yet started. The chains of groups with group stages start first, so those stages overlap the other chains."""
    def group(chain: Chain) -> Path:
        return chain.lock.parents[2]

    with_group_stages = {c.group for c in group_cmds} | {g for c in group_cmds for g in c.needs}
    pending = [_Task(chain) for chain in sorted(chains, key=lambda c: group(c) not in with_group_stages)]
    placed: dict[Path, list[_Task]] = {}
    for task in pending:
        placed.setdefault(group(task.chain), []).append(task)
    for command in group_cmds:
        task = _Task(None, command, [t for g in (command.group, *command.needs) for t in placed.get(g, [])])
        placed.setdefault(command.group, []).append(task)
        pending.append(task)
    ready = threading.Condition()
    bar = tqdm(total=sum(len(t.commands()) for t in pending), desc="grid", unit="stage", dynamic_ncols=True)

    def next_task() -> _Task | None:
        with ready:
            while pending:
                runnable = [t for t in pending if all(n.finished for n in t.needs)]
                if runnable:
                    task = min(runnable, key=lambda t: t.chain is not None)  # a ready group stage first
                    pending.remove(task)
                    return task
                ready.wait()
            return None

    def work() -> None:
        while (task := next_task()) is not None:
            THREADS.change(+1)
            try:
                if task.chain is not None:
                    task.chain(bar)
                else:
                    if STOPPING.is_set():
                        task.command.status = "interrupted"
                    elif not any(n.blocked() for n in task.needs):  # else left pending: not reached
                        run_command(task.command)
                    bar.update(1)
            finally:
                THREADS.change(-1)
                with ready:
                    task.finished = True
                    ready.notify_all()

    with bar, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(work) for _ in range(jobs)]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C: stop the running stages as SIGTERM does, let the workers wind down
            stop_on_sigterm()
            raise


def launch(chains: list[Chain], args) -> list[Chain]:
    """Run the chains on Slurm or submitit's local executor; returns them with their statuses filled in.

    On Slurm the chains go out as one job array and this waits until every one has finished, following
    requeues (time limit, pre-emption), so what comes after (group stages, averaging) sees finished chains."""
    if not chains:
        return []
    import submitit

    folder = Path(args.workdir) / "slurm_logs"
    if args.launcher == "submitit-local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=args.time)
        jobs = [executor.submit(chain) for chain in chains]
        print(f"submitted {len(jobs)} chain(s); logs in {folder}")
        return [_result(job, chain) for job, chain in zip(jobs, tqdm(chains, desc="chains", unit="chain"))]
    if shutil.which("sbatch") is None:
        raise ToolkitError("--launcher slurm needs Slurm's sbatch, which is not on PATH here; to run the same "
                           "chains on this machine use --launcher submitit-local (or --launcher local)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=args.max_timeouts)
    delay = args.signal_delay if args.signal_delay is not None else min(90, max(5, args.time * 6))
    params = {"timeout_min": args.time, "gpus_per_node": args.gpus_per_task or None,
              "slurm_partition": args.partition, "slurm_mem": f"{args.mem}GB" if args.mem else None,
              "slurm_signal_delay_s": delay, "slurm_array_parallelism": 256}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = _submit_array(executor, chains)
    print(f"submitted {len(jobs)} chain(s) as Slurm job {jobs[0].job_id.split('_')[0]}; logs in {folder}",
          flush=True)
    return _wait_for_slurm(jobs, chains)


def _submit_array(executor, chains: list[Chain]) -> list:
    """One job array of the Chain objects themselves (checkpointable); Slurm's refusal becomes a ToolkitError."""
    from submitit.core.utils import FailedJobError

    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal), executor.batch():  # submitit prints sbatch's errors to stderr
            jobs = [executor.submit(chain) for chain in chains]
    except FailedJobError as err:
        lines = [line.strip() for line in (str(err) or refusal.getvalue()).splitlines() if line.strip()]
        reason = "; ".join(line.removeprefix("sbatch: error: ") for line in lines) or "no reason given"
        raise ToolkitError(f"Slurm refused the job array: {reason}; {_flag_to_change(reason)}") from None
    return jobs


def _flag_to_change(reason: str) -> str:
    """Which reproduce.py flag to change for sbatch's refusal."""
    text = reason.lower()
    for words, advice in ((("memory",), "ask for less with --mem GB (or leave --mem out: the cluster's default)"),
                          (("time limit",), "lower --time (minutes) to the partition's limit"),
                          (("partition",), "pick an existing --partition (see sinfo)"),
                          (("gres", "gpu"), "change --gpus-per-task to what the nodes have"),
                          (("node configuration", "cpu"),
                           "lower --mem, --gpus-per-task or --time, or choose another --partition")):
        if any(word in text for word in words):
            return advice
    return "check --partition, --mem, --time and --gpus-per-task against sinfo"


# Slurm job states after which no attempt follows (squeue); the others (PENDING, RUNNING, REQUEUED, ...) go on.
_SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT"}
_SLURM_INTERRUPTED = {"CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "DEADLINE"}


def _wait_for_slurm(jobs: list, chains: list[Chain], poll_s: float = 1.0, squeue_s: float = 10.0) -> list[Chain]:
    """Wait for every job: its result file (written once, by the attempt that finishes the chain), or squeue
    saying twice in a row that it ended without one (cancelled, timed out, killed; twice, so that a requeue's
    passing state is not taken for the end). Works without Slurm accounting (sacct)."""
    out = list(chains)
    waiting = dict(enumerate(jobs))
    ended_before: set[int] = set()
    last_squeue = float("-inf")
    with tqdm(total=len(jobs), desc="chains", unit="chain", dynamic_ncols=True) as bar:
        while waiting:
            states = None
            if time.monotonic() - last_squeue > squeue_s:
                states = _squeue_states({job.job_id.split("_")[0] for job in waiting.values()})
                last_squeue = time.monotonic()
            for index, job in list(waiting.items()):
                ended = None  # the state it ended in, once squeue said so twice
                if states is not None:
                    state = states.get(job.job_id, "GONE")
                    if state not in _SLURM_ENDED and state != "GONE":
                        ended_before.discard(index)
                    elif index in ended_before:
                        ended = state
                    else:
                        ended_before.add(index)
                if job.paths.result_pickle.exists() or ended is not None:
                    out[index] = _result(job, chains[index], ended)
                    del waiting[index]
                    bar.update(1)
            if waiting:
                time.sleep(poll_s)
    return out


def _squeue_states(array_ids: set[str]) -> dict[str, str] | None:
    """{job id (array tasks as A_T): state} for the given jobs; None when squeue does not answer."""
    try:
        result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(sorted(array_ids))],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return {} if "invalid job id" in result.stderr.lower() else None  # every job purged, or no answer
    return dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) >= 2)


def _result(job, chain: Chain, ended: str | None = None) -> Chain:
    """The chain as the job returned it. When the job raised, or ended (squeue state `ended`) without a result,
    the local chain with its first unfinished stage marked interrupted (cancelled, timed out, pre-empted) or
    failed, and the job's log named."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    status = why = None
    if ended is None or job.paths.result_pickle.exists():  # (squeue said `ended` twice, 10 s apart)
        try:
            return job.result()
        except FailedJobError as err:  # the chain raised, or submitit stopped requeueing it
            if "Job not requeued" in str(err):
                status, why = "interrupted", "reached --time more than --max-timeouts times"
            else:
                status, why = "failed", "raised an error"
        except UncompletedJobError:
            pass
    if status is None:
        status = "interrupted" if ended in _SLURM_INTERRUPTED else "failed"
        why = f"ended ({ended}) without a result" if ended not in (None, "GONE") else "ended without a result"
    for command in chain.commands:
        if command.status == "pending" and not command.is_done():
            command.status = status
            break
    print(f"{status.upper()} chain {chain.label}: job {job.job_id} {why}; see {job.paths.stderr}", flush=True)
    return chain


def summarize(commands: list[Command]) -> int:
    """Print done/skipped/failed/interrupted counts and time per stage; returns the exit status."""
    counts = Counter(c.status for c in commands)
    seconds = Counter()
    for command in commands:
        seconds[command.stage] += command.seconds
    print(f"summary: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, "
          f"{counts['interrupted']} interrupted, {counts['busy']} left to another running process, "
          f"{counts['pending']} not reached")
    if counts["done"] == 0 and counts["failed"] == 0 and counts["interrupted"] == 0:
        print("nothing to do: every stage was already done")
    if seconds:
        print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items() if v > 0))
    for command in commands:
        if command.status == "failed":
            print(f"FAILED {command.stage}: {command.shell()}  (log: {command.log})")
        elif command.status == "interrupted":
            print(f"INTERRUPTED {command.stage} (rerun the same reproduce.py command to continue): "
                  f"{command.shell()}  (log: {command.log})")
    return 1 if counts["failed"] or counts["interrupted"] else 0


def run_group_stages(chains: list[Chain], group_cmds: list[Command]) -> None:
    """After Slurm's chains: each group stage in order, skipped when a chain or stage of its groups failed."""
    failed_groups = {c.lock.parents[2] for c in chains
                     if any(x.status in ("failed", "interrupted") for x in c.commands)}
    for command in group_cmds:  # a group stage needs every seed of its group, its extraction the group stage
        if command.group not in failed_groups and not failed_groups.intersection(command.needs):
            run_command(command)
            if command.status in ("failed", "interrupted"):
                failed_groups.add(command.group)


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = resolve_grid(args)
    chains, group_cmds, final = build_plan(args, parts)
    if args.print:
        for command in [c for chain in chains for c in chain.commands] + group_cmds + final:
            print(command.shell())
        return 0
    THREADS.jobs, THREADS.cores = args.jobs, ThreadShare.usable_cores()
    STOPPING.clear()
    if args.force:
        for command in [c for chain in chains for c in chain.commands] + group_cmds:
            command.argv.append("--force")
    reports = [command.log.parent / "report.md" for command in final]   # averaging: one per workdir
    with server_blas_threads(max(1, THREADS.cores // args.jobs)):
        if args.launcher == "local":
            signal.signal(signal.SIGTERM, stop_on_sigterm)
            run_local(chains, group_cmds, args.jobs)
        else:
            chains = launch(chains, args)   # submitit returns the chains it ran (copies)
            run_group_stages(chains, group_cmds)
        ran = [c for chain in chains for c in chain.commands] + group_cmds
        for command, report in zip(final, reports):
            if STOPPING.is_set():
                command.status = "interrupted"
            elif any(c.status == "done" for c in ran) or not report.is_file():
                run_command(command)
    status = summarize(ran + final)
    for report in reports:
        if report.is_file():
            print(f"report: {report}")
    if not args.full and status == 0:
        print(full_run_summary(args))
    return EXIT_INTERRUPTED if STOPPING.is_set() else status


def full_run_summary(args) -> str:
    """What the papers' own grids (--full) add to the demo just run: per paper its runs, epochs and stages."""
    papers = list(PAPER_ORDER) if args.paper == "all" else [args.paper]
    lines = ["This was the demo. Each paper's published grid (python reproduce.py --paper P --full --print lists "
             "its commands; CIFAR and SVHN are read from torchvision's files under --data-root, README: Data):"]
    for paper in papers:
        grid = FULL_GRIDS[paper]
        parts = grid if isinstance(grid, tuple) else (grid,)
        full = parse_args(["--paper", paper, "--full", "--workdir", args.workdir])
        with contextlib.redirect_stderr(io.StringIO()):  # the grid's notes are --full's to print
            chains, group_cmds, _ = build_plan(full, resolve_grid(full))
        commands = [c for chain in chains for c in chain.commands] + group_cmds
        trainings = sum(c.stage == "train" for c in commands)
        what = "; ".join(f"{'/'.join(p.traindata)} x {len(p.models)} models x {len(p.seeds)} seeds, {p.epochs} epochs"
                         for p in parts)
        lines.append(f"  {paper}: {trainings} training(s), {len(commands) - trainings} measuring stages ({what})")
    if "000" in papers:
        full, demo = (dict(zip(flags[0::2], flags[1::2])) for flags in (STAGES[0].full, STAGES[0].demo))
        lines.append("  000's analysis there: " + ", ".join(
            f"{flag} {full[flag]} (demo {demo[flag]})" for flag in ("--ratios", "--num_grams", "--num_stability",
                                                                    "--stability_variants")))
    return "\n".join(lines)


def _union(sequences) -> tuple:
    out = []
    for items in sequences:
        out += [x for x in items if x not in out]
    return tuple(out)


if __name__ == "__main__":
    run_main(main)
