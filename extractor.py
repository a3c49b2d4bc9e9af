"""Per run: raw measurements -> compact scores (AUROC, CKA, R_f, ...) in rnd<seed>/extract/.

    python extractor.py --model-name resnet18 --traindata cifar10 --num_classes 10 --seed 0

Runs the extraction of every paper whose stage outputs the run holds (reports/<paper>.py), then writes
extract/summary.json (one entry per paper) and extract/_done.json.
"""
from __future__ import annotations

from pipeline.contract import open_stage
from pipeline.loaded import load_config
from reports import paper_modules
from utils.cli import ToolkitParser, add_run_flags, add_stage_flags, run_main
from utils.errors import ToolkitError
from utils.rundir import RunDir


def parse_args(argv=None):
    parser = ToolkitParser(description=__doc__.split("\n\n")[0])
    add_run_flags(parser)
    add_stage_flags(parser, start_epoch_help="accepted so that the seed000 README's command runs as written; the "
                    "extraction reads what the stages measured (each stage's _done.json records its epoch)",
                    precision=False)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = RunDir.from_args(args)
    load_config(run)  # a clear error when the run does not exist
    papers = [paper for paper in paper_modules() if paper.has_outputs(run)]
    if not papers:
        raise ToolkitError(f"{run.root} holds no measurement yet; run analyzing.py, features.py, kernels.py, "
                           "stability.py, decompose.py or rainbow.py first")
    flags = {"papers": [paper.__name__ for paper in papers], "formats": [paper.FORMAT for paper in papers],
             "start_epoch": args.start_epoch}
    out = open_stage(run, "extract", flags, args.force)
    if out is None:
        return 0
    summary = {paper.__name__.split(".")[-1]: paper.extract(run, out) for paper in papers}
    out.save("summary", summary)
    out.done()
    print(f"{out.dir}: extracted {', '.join(summary)}")
    return 0


if __name__ == "__main__":
    run_main(main)
