"""seed000 (dimensionality-induced information loss of outliers): per-run scores (extract.py, which documents the
extract file) and the across-seed section (report.py: seeds.py pools the seeds, table.py and figures.py draw)."""
from reports.seed000.extract import extract, has_outputs
from reports.seed000.layout import ALL_METRICS, FORMAT, METRICS, SKLEARN_METRICS, TITLE
from reports.seed000.report import average
from reports.seed000.seeds import Seeds

__all__ = ["ALL_METRICS", "FORMAT", "METRICS", "SKLEARN_METRICS", "TITLE", "Seeds", "average", "extract",
           "has_outputs"]
