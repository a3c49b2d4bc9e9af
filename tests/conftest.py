"""Shared pytest set-up: the repository root on sys.path, one intra-op thread for the small in-process models
(thread start-up dominates their cost; scripts run as subprocesses keep torch's default)."""
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
torch.set_num_threads(int(os.environ.get("TOOLKIT_TEST_THREADS", "1")))
