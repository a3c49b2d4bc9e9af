"""Shared command-line pieces: flags named as in the seed READMEs, and one-line errors with exit status 2."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from utils.errors import ToolkitError
from utils.rundir import DEFAULT_PTR

EXIT_USAGE = 2
# 128 + SIGTERM, as a shell reports a process SIGTERM ended: a script stopped by SIGTERM (Slurm's requeue,
# pre-emption or time limit) after saving what it had; the same command continues the work.
EXIT_INTERRUPTED = 143


class DefaultOnceFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help only when the help does not already say its default and there is one
    to say (not None, not False), so that each help text states its default once."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class ToolkitParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`error: ...`) and exit with status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultOnceFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def add_run_flags(parser: argparse.ArgumentParser, default_model: str = "resnet18") -> None:
    """Flags that locate a run directory: <workdir>/<traindata>/<model-name>/rnd<seed>."""
    parser.add_argument("--model-name", default=default_model, help="architecture name (see models.list_models())")
    parser.add_argument("--traindata", default="digits", help="training dataset (digits, mnist, cifar10, ...)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="number of classes; checked against the dataset (default: the dataset's)")
    parser.add_argument("--seed", type=int, default=0, help="run seed: the run lives in rnd<seed>/")
    parser.add_argument("--workdir", default="runs", help="root of all run directories")
    parser.add_argument("--data-root", default="data", help="folder holding dataset files (torchvision layout)")
    parser.add_argument("--width", type=positive_float, default=None,
                        help="channel-width multiplier of the architecture (training: default 1; measurement "
                             "stages: the run's own, and a different value is an error)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--gaussian_corruption_std", type=non_negative_float, default=0.0,
                        help="training: std of the Gaussian noise added to normalised train and test images (seed004 "
                             "§2.7); it is part of the run's identity, so stages take it to find the run "
                             "(<model>@sigma<std>/)")
    parser.add_argument("--selectivity_reg", type=finite_float, default=0.0, metavar="ALPHA",
                        help="training: the class-selectivity regulariser of Leavitt & Morcos (2021) on the stage "
                             "outputs (seed003 §10), loss = cross-entropy - ALPHA * mean class selectivity index; "
                             "ALPHA < 0 lowers selectivity (seed003's repo-2 net: -0.1); part of the run's identity "
                             "(<model>@si<ALPHA>/)")
    parser.add_argument("--ptr", type=int, default=DEFAULT_PTR,
                        help="twopoints only: number of training points; part of the run's identity (<model>@ptr<n>/ "
                             "when not the default)")


def add_stage_flags(parser: argparse.ArgumentParser, start_epoch_help: str = "analyse the checkpoint of this epoch "
                    "(default: the last epoch trained)", precision: bool = True) -> None:
    """Flags every measurement stage shares (seed000 README: --start_epoch E --resume), and --allow-tf32 for those
    that compute (`precision`)."""
    parser.add_argument("--start_epoch", type=int, default=None, help=start_epoch_help)
    parser.add_argument("--resume", action="store_true",
                        help="accepted only so that the seed READMEs' commands run as written; it does nothing "
                             "(a stage always loads a checkpoint: the last one, or --start_epoch)")
    parser.add_argument("--force", action="store_true", help="recompute even if the stage's _done.json matches")
    if precision:
        parser.add_argument("--allow-tf32", action="store_true",
                            help="on Ampere and newer GPUs, let float32 convolutions and matrix products run in TF32 "
                                 "(faster, about 1e-3 relative error); off by default, recorded in the stage's "
                                 "_done.json flags; no effect on the CPU")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a NaN, an infinity or a sign error is a one-line usage error)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (float('nan') and 'inf' are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main; a ToolkitError becomes one line on stderr and exit status 2."""
    try:
        status = main(argv)
    except ToolkitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun the same command to continue", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
