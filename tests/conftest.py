"""Shared pytest set-up: the repository root on sys.path, CPU threads capped so the suite is reproducible."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)
