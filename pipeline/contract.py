"""The stage contract: every stage's folder, files (name templates and keys) and prerequisites, in one place.

The script that writes a stage, the report that reads it and reproduce.py that schedules it all take names from
here; no stage file or folder name is spelled anywhere else (DESIGN.md, "The run directory").

    out = open_stage(run, "analysis", flags, force)          # None when already done with these flags
    out.save("projections", arrays, tag="all", ds="digits")  # -> analysis/projections_all_digits.npz, keys checked
    out.done(seconds=12.0)                                    # writes analysis/_done.json last
    load(run, "analysis", "projections", tag="all", ds="digits")   # a reader: dict of arrays, keys checked

A file's `keys` are those every writer must write and every reader may rely on; per-layer keys with a two-digit
suffix (feat_00, weight_01, ...) are listed by their prefix in `prefixed`. `tests/pipeline/test_contract.py` runs every
stage on a tiny run and checks what it wrote against its record here.
"""
from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import ToolkitError
from utils.io import load_json, load_npz, load_torch, save_json, save_npz, save_torch
from utils.rundir import DONE_FILE, TRAIN_FILES, RunDir, is_done, mark_done

TRAIN_SET = "traindata"   # the evaluation-set tag of the train split (no augmentation) in seed000 file names


def log_path(folder: Path, name: str) -> Path:
    """The log of command `name` (a stage, "train", "averaging") run for `folder` (a run's root, a group folder or
    the report folder): <folder>/logs/<name>.log, or <report>/<name>.log beside the report it writes."""
    return folder / f"{name}.log" if name == "averaging" else folder / "logs" / f"{name}.log"


def lock_path(run: RunDir) -> Path:
    """The lock a grid holds while it runs the run's chain (one grid per run at a time)."""
    return run.root / "logs" / ".lock"


def layer_key(index: int, prefix: str | None = None) -> str:
    """The 0-based layer key of every per-layer file name and array key: "07", or "feat_07" with a prefix."""
    return f"{prefix}_{index:02d}" if prefix else f"{index:02d}"


@dataclass(frozen=True)
class StageFile:
    """One file of a stage: its name template (str.format fields), required keys and per-layer key prefixes."""

    template: str
    keys: tuple[str, ...] = ()
    prefixed: tuple[str, ...] = ()   # keys "<prefix>_<suffix>" (a layer ll, a k, ...): at least one present
    doc: str = ""
    optional: bool = False           # written by some runs only (e.g. best.pt, by the recipes that keep it)

    def name(self, **fields) -> str:
        missing = [f for f in self.fields if f not in fields]
        if missing:
            raise ValueError(f"{self.template} needs the fields {missing}")
        return self.template.format(**{key: fields[key] for key in self.fields})

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.template) if name)

    def match(self, filename: str) -> dict[str, str] | None:
        """The fields of `filename` when it is an instance of the template (None otherwise)."""
        pattern = "".join(re.escape(literal) + (f"(?P<{name}>.+?)" if name else "")
                          for literal, name, _, _ in string.Formatter().parse(self.template))
        found = re.fullmatch(pattern, filename)
        return found.groupdict() if found else None

    @property
    def kind(self) -> str:
        return Path(self.template).suffix.lstrip(".")


@dataclass(frozen=True)
class Schedule:
    """How reproduce.py's grids run a stage: the flags the demo and the published (--full) grid add, whether it
    takes the grid's --ood-sets/--near-ood/--validation-ood (pipeline.evaluation), the flag that gives a width
    sweep's stage the other widths' workdirs (it then runs once, in the widest width's workdir, after every
    width's chains and group stages), and how many of a part's first seeds the demo runs it for (None: all)."""

    demo: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    ood: bool = False
    sweep_flag: str = ""
    demo_seeds: int | None = None


@dataclass(frozen=True)
class Stage:
    """A stage, declared once: the script (and subcommand) that writes it, its folder and files, what must run
    first, how the grids schedule it (None: reproduce.py does not) and the tiny sizes the tests run it at."""

    name: str
    script: str
    folder: str
    files: Mapping[str, StageFile]
    requires: tuple[str, ...] = ()
    scope: str = "run"               # run: under rnd<seed>/; group: under <dataset>/<model>/, combining seeds
    subcommand: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()      # the flags that select this stage's folder (stability modes)
    paper: str = ""
    schedule: Schedule | None = None
    tiny: tuple[str, ...] = ()       # the test suite's small sizes (tests/stage_commands.py)

    def dir(self, run: RunDir) -> Path:
        return (run.group if self.scope == "group" else run.root) / self.folder

    def file(self, key: str) -> StageFile:
        if key not in self.files:
            raise KeyError(f"stage {self.name!r} has no file {key!r} (has {sorted(self.files)})")
        return self.files[key]

    def path(self, run: RunDir, key: str, **fields) -> Path:
        return self.dir(run) / self.file(key).name(**fields)

    def argv(self, mode: str) -> list[str]:
        """script, subcommand, the folder-selecting flags and the grid's flags for `mode` ("demo" or "full"), the
        run's identity flags excluded."""
        return [self.script, *self.subcommand, *self.flags, *getattr(self.schedule, mode)]

    def command(self, run: RunDir) -> str:
        """The command that produces this stage for `run` (for error messages)."""
        return " ".join(["python", self.script, *self.subcommand, *run.identity(seed=self.scope == "run"),
                         *self.flags])


def _f(template: str, *keys: str, prefixed: tuple[str, ...] = (), doc: str = "", optional: bool = False
       ) -> StageFile:
    return StageFile(template, tuple(keys), prefixed, doc, optional)


# Training (train_classifier.py) is the first stage of every run: its files are the run folder's own
# (utils.rundir.TRAIN_FILES), its done mark the run's _done.json; the demo trains in channels_last layout (the same
# training: 1.36x on one CPU core).
TRAIN = "train"
_TRAIN_DOCS = {
    "config": ("resolved flags, versions, git commit, time; model, data (mean, std), recipe", ("flags", "model",
                                                                                               "data", "recipe")),
    "log": ("one row per epoch", ("epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds")),
    "checkpoint": ("a kept epoch (0: the initialisation); the model state dict", ("model",)),
    "last": ("for --resume: model, optimiser, generator and RNG states", ("model", "optimizer")),
    "best": ("the best test accuracy's epoch (the seed004 recipes)", ("model",)),
}
_TRAIN_FILES = {key: _f(name, *_TRAIN_DOCS[key][1], doc=_TRAIN_DOCS[key][0], optional=key == "best")
                for key, name in TRAIN_FILES.items()}


_STABILITY = {"stability": _f("stability.npz", "nodes", "dims", "D", "G", "R", "den"),
              "summary": _f("summary.json", "epoch", "checkpoint", "test_accuracy", "probe_accuracy", "P",
                            "deformation", "temperature", "cut", "delta", "interp", "noise_magnitude", "statistic",
                            "corruption_std", "train_corruption_std", "node_set", "output", "seconds")}

# seed003 (decompose.py): one stage per subcommand and per source of the filter sets, "ours" (computed, or an
# --indices file) and "csg" (a CSG gate matrix, spec §8), side by side so that neither overwrites the other.
DECOMPOSE_SOURCES = ("ours", "csg")
DECOMPOSE_FOLDERS = {"ours": "decompose/", "csg": "decompose/csg/"}
_DECOMPOSE = {
    "indices": {"indices": _f("indices.json"),
                "histograms": _f("indices.npz", prefixed=("fc_topk_overlap",),
                                 doc="histograms_<k> (classes, D) for computed sets only (not --indices/--csg-gates)"),
                "summary": _f("summary.json", "skipped_k", "filters"),
                "selectivity": _f("selectivity.npz", "names", "widths", "psi", "class_selectivity", "signed",
                                  prefixed=("unit_si",),
                                  doc="every analysis layer l (its input, spatially averaged; 0-based, the last = "
                                      "the classifier input), train split: psi at mass 0.5 and the mean class "
                                      "selectivity index (seed003 §10), NaN where signed (a negative value seen, "
                                      "e.g. the network input); unit_si_<ll> (D_l,) per unit")},
    "validate": {"validate": _f("validate.json", "full", "decomposed", "max_form_gap")},
    "essential": {"essential": _f("essential.json")},
    "finetune": {"finetune": _f("finetune.json"), "finetuned": _f("finetuned_k{k}.pt")},
}


# finetune: repo 1's default lr 2e-4 for the paper's 10 epochs (§6; the README's 91.3-91.4% after one epoch used 1e-4)
_DECOMPOSE_SCHEDULE = {"finetune": Schedule(demo=("-k", "5", "--epochs", "1"), full=("--epochs", "10", "--lr", "2e-4"))}


def decompose_stage(subcommand: str, source: str = "ours") -> str:
    """The stage name of a decompose.py subcommand for filter sets of `source` (DECOMPOSE_SOURCES)."""
    if source not in DECOMPOSE_SOURCES:
        raise KeyError(f"unknown source of filter sets {source!r} (known: {DECOMPOSE_SOURCES})")
    return f"decompose-{subcommand}" if source == "ours" else f"decompose-{source}-{subcommand}"


SMALL = ("--max-samples", "120", "--batchsize", "32")   # the tests' evaluation sets and batches
BY_LAYER = ("--by_layer", "--P", "40")
# seed000 §6: every one of the 53 thresholds (analyzing.py's default), 10,000 Gram and noise samples, every variant
# perturbed, batches of 128 (BN in eval mode: the batch size changes nothing but the speed); the demo caps them
# (each stage records its caps in _done.json)
SEED000_FULL = ("--batchsize", "128")
# seed004: probes carry the run's training noise (Fig. 1/10, corrupt_test 1; nothing at sigma 0); by layer with 100
# probes per pass (memory; trained numbers do not depend on it); init by node too, on one 500-probe BN batch (§2.6)
SEED004_DEMO = ("--by_layer", "--P", "100", "--corrupt_test")
SEED004_FULL = ("--by_layer", "--P", "500", "--batchsize", "100", "--corrupt_test")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(TRAIN, "train_classifier.py", "", files=_TRAIN_FILES, schedule=Schedule(demo=("--channels-last",)),
          tiny=("--width", "0.25", "--epochs", "1")),
    Stage("analysis", "analyzing.py", "analysis", paper="000", tiny=("--ratios", "3", "--num_grams", "80",
                                                                      "--num_stability", "16", "--stability_variants",
                                                                      "original", *SMALL),
          schedule=Schedule(demo=("--ratios", "6", "--max-samples", "150", "--num_grams", "150", "--num_stability",
                                  "50", "--stability_variants", "original"),
                            full=(*SEED000_FULL, "--ratios", "53", "--num_grams", "10000", "--num_stability",
                                  "10000", "--stability_variants", "every"), ood=True),
          files={   # docstring of analyzing.py
        "svals": _f("svals.npz", "svals", "lengths", "ratios", "ratio_index", "ndims", "same_as", "fan_in", "fan_out",
                    doc="ratio_index (R,): positions among the 53 thresholds, the same for every seed "
                        "(analyzing.ratio_positions(R)); same_as (R,): the column whose network (and numbers) a "
                        "threshold shares; every threshold has its own projections/sensitivity files"),
        "projections": _f("projections_{tag}_{ds}.npz", "norm00", "norm0", "norm1", "norm00_bn", "logits", "labels",
                          "ranks",
                          doc="tag: all or a ratio position q (three digits); ds: traindata, the dataset's test set "
                              "or an OOD set's tag (pipeline.evaluation.set_tag; _done.json ood_tags maps tags to "
                              "names); norm00_bn (N, L): ||BN output of weight layer l||^2 (seed000 k_bn), NaN where "
                              "no BatchNorm follows layer l"),
        "sensitivity": _f("sensitivity_{tag}_{ds}.npz", "chi", "noise_layers", "eta",
                          doc="every set, traindata included; chi (n, P, L + 1)"),
        "grams": _f("grams_{ds}.npz", prefixed=("feat", "gram")),
    }),
    Stage("features", "features.py", "features", paper="000", tiny=SMALL,
          schedule=Schedule(full=SEED000_FULL, ood=True), files={   # docstring of features.py
        "eigenvalues": _f("eigenvalues.npz", "eigenvalues", "dims", "counts"),
        "mahalanobis": _f("mahalanobis_{layer}_{ds}.npz", "distance_exp", "inferred_exp", "distance_eps",
                          "inferred_eps", "dims_exp", "dims_eps", "distance_full", "inferred_full", "dims_full",
                          doc="distance_full/inferred_full (N,): at d = dims_full = D, the directions of non-zero "
                              "variance (= dims_eps[-1])"),
    }),
    Stage("kernels", "kernels.py", "kernels", requires=("analysis",), paper="000", tiny=SMALL, schedule=Schedule(),
          files={   # docstring of kernels.py
        "kernels": _f("kernels_{ds}.npz", "gram_eigenvalues", "gram_lengths", "cka",
                      *[f"{p}_{k}" for k in ("cka", "cca", "reg0", "reg1") for p in ("sum", "spectrum", "length")],
                      doc="gram_eigenvalues (L, r) centred-Gram eigenvalues (gram_lengths valid); spectrum_<kind> "
                          "(L, L, r) with length_<kind> valid values, sum_<kind> (L, L), for kind in cka, cca, reg0, "
                          "reg1; cka (L, L) = sum_cka"),
    }),
    Stage("stability", "stability.py", "stability/trained", paper="004", files=_STABILITY, tiny=BY_LAYER,
          schedule=Schedule(demo=SEED004_DEMO, full=SEED004_FULL)),
    Stage("stability-init", "stability.py", "stability/init", flags=("--init",), paper="004", files=_STABILITY,
          tiny=BY_LAYER, schedule=Schedule(demo=SEED004_DEMO, full=("--by_layer", "--P", "500", "--corrupt_test"))),
    Stage("stability-fresh", "stability.py", "stability/fresh", flags=("--init", "fresh"), paper="004",
          files=_STABILITY, tiny=("--P", "40")),
    Stage("stability-shuffled", "stability.py", "stability/shuffled", flags=("--shuffle_channels",), paper="004",
          files=_STABILITY, tiny=BY_LAYER, schedule=Schedule(demo=SEED004_DEMO, full=SEED004_FULL)),
    Stage("stability-shuffled2", "stability.py", "stability/shuffled2", flags=("--shuffle_channels", "2"),
          paper="004", files=_STABILITY, tiny=("--P", "40")),
    Stage("laplacian", "stability.py", "stability/laplacian", flags=("--laplacian",), paper="004",
          schedule=Schedule(), files={
        "laplacian": _f("laplacian.npz", "layers", "kernel_sizes", prefixed=("eigenvalues", "trained", "init")),
        "summary": _f("summary.json", "epoch", "checkpoint", "layers", "seconds"),
    }),
    # the 1-D net of §2.12 is trained by the stage itself (the run's net is not read): one seed in the demo; the
    # published grid runs the paper's H = 1000 with the original's cap of 6 x 10^5 epochs (it stops at zero loss)
    Stage("scale1d", "scale1d.py", "stability/scale1d", paper="004",
          tiny=("--scale1d_channels", "16", "--scale1d_length", "32", "--scale1d_xi", "8", "--scale1d_ptr", "64",
                "--scale1d_epochs", "2"),
          schedule=Schedule(full=("--scale1d_channels", "1000", "--scale1d_epochs", "600000"), demo_seeds=1), files={
        "scale1d": _f("scale1d.npz", "layers", "diffusive_k",
                      *[f"{m}_{k}" for m in ("trained", "init", "trained_chmean", "init_chmean", "pooling",
                                             "prediction", "diffusive") for k in "DGR"]),
        "summary": _f("summary.json", "seed", "length", "xi", "channels", "depth", "ptr", "ridge", "epochs",
                      "zero_loss_epoch", "converged", "train_loss", "val_error", "test_error", "probes", "seconds"),
    }),
    *(Stage(decompose_stage(sub, source), "decompose.py", DECOMPOSE_FOLDERS[source] + sub, subcommand=(sub,),
            requires=() if sub == "indices" else (decompose_stage("indices", source),),
            flags=() if source == "ours" else ("--source", source), paper="003", files=files,
            tiny=("-k", "3", *SMALL, *(("--epochs", "2") if sub == "finetune" else ())),
            schedule=_DECOMPOSE_SCHEDULE.get(sub, Schedule()) if source == "ours" else None)
      for source in DECOMPOSE_SOURCES for sub, files in _DECOMPOSE.items()),
    Stage("rainbow", "rainbow.py", "rainbow", scope="group", paper="002",
          tiny=("--num_samples", "2", "--clip_points", "3", "--ks_ranks", "1", "10"),
          schedule=Schedule(demo=("--num_samples", "5", "--clip_points", "26", "--retrain_epochs", "2"),
                            full=("--num_samples", "10", "--batchsize", "64", "--retrain_epochs", "150")),
          files={   # L weight layers, M seeds, K samples; layer keys 00..L-1 (0-based); D_flat: layer l's fan-in
        "alignment": _f("alignment.npz", "dims", "r2", "error", "unexplained_variance",
                        doc="dims (L,) D_l; r2 (L, M-1) train r2 of net k vs net 1; error (L, M-1) test alignment "
                            "error; unexplained_variance (L, num_iters + 1) of the mean after each pass (layer 0: "
                            "the identity alignment, r2 1, error 0)"),
        "spectra": _f("spectra.npz", prefixed=("weight", "weight_single", "weight_init", "activation"),
                      doc="weight_ll C_l eigenvalues (D_flat, descending); weight_single_ll net 1's alone, "
                          "weight_init_ll its initialisation's; activation_ll (D_l,) the mean net's, l >= 1"),
        "rainbow": _f("rainbow.npz", "trained_accuracy", "trained_top5", "seeds", "rainbow_accuracy", "rainbow_top5",
                      "retrained_accuracy", "retrained_top5",
                      doc="trained_* (M,); rainbow_* (K, L): column r = layers 0..r-1 resampled (r = L-2: the "
                          "paper's CIFAR reading, r = L-1: the full rainbow net); retrained_* (K,), NaN if not "
                          "retrained"),
        "clipping": _f("clipping.npz", "bases", "reference_accuracy", prefixed=("d", "accuracy"),
                       doc="bases (3,) weight, activation, random; for ll = 01..L-1: d_ll (G,), accuracy_ll (3, G)"),
        "convergence": _f("convergence.npz", "nets", "operator_error", prefixed=("spectrum", "d", "accuracy"),
                          doc="nets (P,) N; operator_error (P, L) ||C_l(N) - C_l(M)|| / ||C_l(M)||; spectrum_ll "
                              "(P, D_flat); d_ll (G,), accuracy_ll (P, G) net 1 clipped in C_l(N)'s basis"),
        "dynamics": _f("dynamics.npz", "epochs", prefixed=("amplification", "cosine"),
                       doc="epochs (T,); amplification_ll, cosine_ll (T, R_l) a_r(t), c_r(t) along C_l's "
                           "eigenvectors, largest first"),
        "cosines": _f("cosines.npz", prefixed=("weight", "weight_aligned", "activation", "activation_aligned"),
                      doc="(k, k) |V_1 V_2^T|, |V_1 A V_2^T|; for ll >= 01 |E_1^T E_2|, |E_1^T A E_2|"),
        "gaussianity": _f("gaussianity.npz", "mp_colored", "mp_white", "ks_ranks", "ks_pvalue",
                          prefixed=("mp_eigs_colored", "mp_eigs_white", "mp_q", "whitened"),
                          doc="mp_* (L-1,) fractions of net 2's spectrum outside the MP bulk (mp_white NaN when "
                              "M N <= D_flat); ks_pvalue (L-1, R) exact KS (NaN: no column r); for ll = 00..L-2: "
                              "mp_eigs_*_ll (mean 1), mp_q_ll (2,), whitened_ll (M N, R) NaN-padded"),
        "summary": _f("summary.json", "dataset", "model", "seeds", "epochs", "layers", "dims", "trained_accuracy",
                      "trained_top5", "rainbow_accuracy", "rainbow_top5", "rainbow_last_trained",
                      "rainbow_last_trained_top5", "retrained_accuracy", "retrained_top5", "rainbow_by_layer", "r2",
                      "alignment_error", "unexplained_variance", "clip_within_1pct", "mp_colored", "mp_white",
                      "ks_pvalue", "seconds",
                      doc="rainbow_accuracy: the full rainbow nets (K,); rainbow_last_trained: column L-2; "
                          "clip_within_1pct {basis: [smallest d with accuracy >= reference - 0.01, l = 1..L-1]}"),
    }),
    Stage("rainbow-width", "rainbow_width.py", "rainbow-width", scope="group", requires=("rainbow",), paper="002",
          tiny=SMALL, schedule=Schedule(full=("--batchsize", "64"), sweep_flag="--sweep_workdirs"),
          files={   # rainbow_width.py --sweep_workdirs DIR...: S widths ascending (one workdir each) vs the widest
              "widths": _f("widths.npz", "widths", "dims", "seeds", "alignment_error", "operator_error",
                           "trained_accuracy", "rainbow_last_trained", "rainbow_full", "rainbow_retrained",
                           prefixed=("weight", "activation"),
                           doc="dims (S, L); seeds (S, M_max) -1-padded; alignment_error (S, L, M_max) on test; "
                               "operator_error (S, L) ||D_s C_l(s) - D_ref C_l(ref)|| / ||D_ref C_l(ref)|| (NaN "
                               "for the reference); weight_ll (S, D_ref_flat) eigenvalues x D_s in the reference's "
                               "space; activation_ll (S, D_max) net 1's / trace; accuracies (S, .) from each "
                               "width's rainbow summary, NaN-padded"),
              "summary": _f("summary.json", "dataset", "model", "widths", "reference_width", "workdirs", "seeds",
                            "trained_accuracy", "rainbow_last_trained", "rainbow_full", "rainbow_retrained",
                            "alignment_error", "operator_error", "seconds"),
          }),
    Stage("extract", "extractor.py", "extract", files={
        "summary": _f("summary.json"),
        "seed000": _f("seed000.npz"),
        "seed004": _f("seed004.npz"),
        "seed003": _f("seed003.json"),
        "seed002": _f("seed002.json"),
    }),
)}


# seed004's measured networks -> the stage holding each one's measurements; the mode names are those stability.py's
# flags select (none, --init, --init fresh, --shuffle_channels, --shuffle_channels 2) and extract/seed004.npz keys
# its arrays by
STABILITY_MODES = {"trained": "stability", "init": "stability-init", "fresh": "stability-fresh",
                   "shuffled": "stability-shuffled", "shuffled2": "stability-shuffled2"}


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r} (known: {sorted(STAGES)})")
    return STAGES[name]


def stage_dir(run: RunDir, name: str) -> Path:
    return stage(name).dir(run)


def stage_path(run: RunDir, name: str, key: str, **fields) -> Path:
    return stage(name).path(run, key, **fields)


def done(run: RunDir, name: str) -> bool:
    """The stage has finished for `run` (its _done.json exists)."""
    return (stage_dir(run, name) / DONE_FILE).is_file()


def done_record(run: RunDir, name: str) -> dict:
    """The stage's _done.json (flags, argv and the stage's own summary keys)."""
    return load_json(stage_dir(run, name) / DONE_FILE, required=("flags",))


def require(run: RunDir, name: str) -> None:
    """A one-line error naming the command to run when the stage has not finished for `run`."""
    if not done(run, name):
        target = stage(name)
        raise ToolkitError(f"{target.name} has not finished for {target.dir(run).parent}; "
                           f"run `{target.command(run)}` first")


def load(run: RunDir, name: str, key: str, **fields) -> Any:
    """Read one stage file, checking the keys its contract record promises."""
    record = stage(name).file(key)
    path = stage(name).path(run, key, **fields)
    if record.kind == "npz":
        return load_npz(path, required=record.keys)
    if record.kind == "json":
        return load_json(path, required=record.keys)
    return load_torch(path)


def instances(run: RunDir, name: str, key: str) -> list[dict[str, str]]:
    """The field values of every file of `key` the stage holds, sorted by file name."""
    folder, record = stage_dir(run, name), stage(name).file(key)
    found = (record.match(p.name) for p in sorted(folder.iterdir())) if folder.is_dir() else ()
    return [fields for fields in found if fields is not None]


@dataclass
class StageOutput:
    """A stage being (re)written: files checked against the contract, the old done mark removed just before the
    first file changes (so a rerun killed part-way is never taken for finished, while bad input caught before
    any write leaves a finished stage as it was), and `done()` last."""

    stage: Stage
    run: RunDir
    flags: dict
    written: list[Path] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return self.stage.dir(self.run)

    def path(self, key: str, **fields) -> Path:
        return self.stage.path(self.run, key, **fields)

    def save(self, key: str, data: Any, **fields) -> Path:
        """Write file `key` (an .npz from a dict of arrays, a .json object, a .pt of tensors), atomically."""
        record = self.stage.file(key)
        if record.kind in ("npz", "json"):
            missing = [k for k in record.keys if k not in data]
            if missing:
                raise ValueError(f"{self.stage.name}/{record.template} lacks the contract keys {missing}")
        if not self.written:
            (self.dir / DONE_FILE).unlink(missing_ok=True)
        path = self.path(key, **fields)
        writer = {"npz": lambda: save_npz(path, **data), "json": lambda: save_json(path, data)}.get(
            record.kind, lambda: save_torch(path, data))
        self.written.append(writer())
        return path

    def done(self, **summary) -> Path:
        """Write _done.json, after every other file of the stage is in place."""
        return mark_done(self.dir, self.flags, **summary)


def open_stage(run: RunDir, name: str, flags: dict, force: bool = False) -> StageOutput | None:
    """The stage's writer, or None (after one line) when it already ran with these flags and no --force."""
    target = stage(name)
    if is_done(target.dir(run), flags) and not force:
        print(f"{target.dir(run)} is up to date; nothing to do (use --force to redo)")
        return None
    return StageOutput(target, run, flags)
