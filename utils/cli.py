"""Shared command-line pieces: flags named as in the seed READMEs, and one-line errors with exit status 2."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from utils.errors import ToolkitError

EXIT_USAGE = 2
# 128 + SIGTERM, as a shell reports a process SIGTERM ended: a script stopped by SIGTERM (Slurm's requeue,
# pre-emption or time limit) after saving what it had; the same command continues the work.
EXIT_INTERRUPTED = 143


class ToolkitParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`error: ...`) and exit with status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
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
    parser.add_argument("--width", type=float, default=1.0, help="channel-width multiplier of the architecture")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def add_stage_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every measurement stage shares (seed000 README: --start_epoch E --resume)."""
    parser.add_argument("--start_epoch", type=int, default=None,
                        help="analyse the checkpoint of this epoch (default: the last epoch trained)")
    parser.add_argument("--resume", action="store_true",
                        help="accepted for compatibility with the seed READMEs: stages always load a checkpoint")
    parser.add_argument("--force", action="store_true", help="recompute even if the stage's _done.json matches")


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
