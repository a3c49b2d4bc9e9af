#!/usr/bin/env bash
# Every CUDA-specific branch of the toolkit in one run, at most 10 minutes on one GPU (issue 27):
#   1. training with --bf16, --channels-last and --compile (inductor on a GPU, aot_eager on the CPU); and twice with
#      --deterministic, which must give the same weights bit for bit;
#   2. SIGTERM mid-training, then --resume on the same device;
#   3. a run stopped on this device resumed on the CPU (the checkpoint's generator state is the CPU's);
#   4. reproduce.py --jobs 2 on one device: every measurement stage, extraction and the report, with the peak memory
#      of each stage process printed (GPU memory from nvidia-smi; resident memory on the CPU);
#   5. analyzing.py on the CPU against this device, TF32 off: the max relative difference of every array, <= 1e-5;
#   6. eigh of an all-zero covariance (it failed on some cuSOLVER versions), directly and through ClassGaussians;
#   7. an image-folder run made by import_weights.py, measured by features.py and analyzing.py (DataLoader workers
#      kept across passes, pinned memory).
#
#   scripts/gpu_smoke.sh                    # on the GPU
#   scripts/gpu_smoke.sh --device cpu       # the same steps on the CPU at tiny sizes (tests/stages/test_gpu_smoke.py)
# Environment: SMOKE_WORKDIR (default: a new temporary folder, removed at the end), PYTHON (default: python).
set -euo pipefail

DEVICE=cuda
if [[ "${1:-}" == "--device" ]]; then DEVICE=${2:?--device needs cpu or cuda}; fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python}
if [[ -n "${SMOKE_WORKDIR:-}" ]]; then W=$SMOKE_WORKDIR; mkdir -p "$W"; else W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; fi
STARTED=$SECONDS
step() { echo "== [$((SECONDS - STARTED)) s] $*"; }

if [[ $DEVICE == cpu ]]; then
    COMPILE=aot_eager; EPOCHS=3; OTHER=cpu; TOLERANCE=1e-12
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --device cpu')"
    COMPILE=inductor; EPOCHS=6; OTHER=cpu; TOLERANCE=1e-5
fi
TRAIN=("$PY" "$ROOT/train_classifier.py" --traindata digits --num_classes 10 --no-progress --seed 0)
NET=(--model-name resnet18 --width 0.25)

step "1. training with --bf16 --channels-last --compile $COMPILE on $DEVICE"
"${TRAIN[@]}" "${NET[@]}" --epochs 2 --bf16 --channels-last --compile "$COMPILE" --device "$DEVICE" --workdir "$W/speed"
for copy in 1 2; do
    "${TRAIN[@]}" "${NET[@]}" --epochs 2 --deterministic --device "$DEVICE" --workdir "$W/deterministic$copy"
done
"$PY" - "$W" <<'EOF'
import sys

import torch

last = [torch.load(f"{sys.argv[1]}/deterministic{copy}/digits/resnet18/rnd0/checkpoints/last.pt", map_location="cpu",
                   weights_only=True)["model"] for copy in (1, 2)]
different = [key for key in last[0] if not torch.equal(last[0][key], last[1][key])]
sys.exit(f"--deterministic runs differ in {different}" if different else 0)
EOF
echo "  --deterministic twice: the same weights bit for bit"

# term_and_resume FOLDER FIRST_DEVICE SECOND_DEVICE: SIGTERM after the first logged epoch, resume to the end
term_and_resume() {
    local folder=$1 log=$1/digits/resnet18/rnd0/train_log.csv
    "${TRAIN[@]}" "${NET[@]}" --epochs "$EPOCHS" --device "$2" --workdir "$folder" & local pid=$!
    until [[ -f $log && $(wc -l < "$log") -ge 2 ]]; do
        kill -0 "$pid" 2>/dev/null || { echo "training ended before it could be stopped"; exit 1; }
        sleep 0.2
    done
    kill -TERM "$pid"
    local status=0; wait "$pid" || status=$?
    if [[ $status -ne 143 && $status -ne 0 ]]; then echo "SIGTERM: exit $status, expected 143"; exit 1; fi
    "${TRAIN[@]}" "${NET[@]}" --epochs "$EPOCHS" --device "$3" --workdir "$folder" --resume
    [[ $(($(wc -l < "$log") - 1)) -eq $EPOCHS ]] || { echo "$log does not list $EPOCHS epochs"; exit 1; }
}
step "2. SIGTERM on $DEVICE, --resume on $DEVICE"
term_and_resume "$W/term" "$DEVICE" "$DEVICE"
step "3. SIGTERM on $DEVICE, --resume on $OTHER"
term_and_resume "$W/across" "$DEVICE" "$OTHER"

step "4. reproduce.py --jobs 2 on one $DEVICE: every stage, with each stage process's peak memory"
"$PY" "$ROOT/reproduce.py" --workdir "$W/grid" --device "$DEVICE" --jobs 2 --epochs 2 > "$W/grid.log" 2>&1 &
GRID=$!
: > "$W/memory.csv"
while kill -0 "$GRID" 2>/dev/null; do
    if [[ $DEVICE == cpu ]]; then   # resident memory (MiB) of the processes below reproduce.py (its stages)
        ps -eo pid=,ppid=,rss= | awk -v top="$GRID" '{parent[$1] = $2; rss[$1] = $3}
            END {for (p in parent) {q = parent[p]; while (q in parent && q != top) q = parent[q];
                                    if (q == top) print p "," int(rss[p] / 1024)}}' >> "$W/memory.csv" || true
    else
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | tr -d ' ' \
            >> "$W/memory.csv" || true
    fi
    sleep 1
done
status=0; wait "$GRID" || status=$?
tail -n 25 "$W/grid.log"
[[ $status -eq 0 ]] || { echo "reproduce.py failed (exit $status); its log: $W/grid.log"; exit 1; }
awk -F, '$2 > peak[$1] {peak[$1] = $2} END {for (p in peak) printf "  process %s: peak %d MiB\n", p, peak[p]}' \
    "$W/memory.csv" | sort -k4,4nr
echo "  $(cut -d, -f1 "$W/memory.csv" | sort -u | wc -l) stage processes seen"

step "5. analyzing.py on cpu against $DEVICE (TF32 off): max relative difference <= $TOLERANCE"
for where in cpu "$DEVICE"; do
    mkdir -p "$W/analysis-$where/digits"
    cp -r "$W/grid/digits/resnet18" "$W/analysis-$where/digits/"
    "$PY" "$ROOT/analyzing.py" --model-name resnet18 --traindata digits --num_classes 10 --seed 0 --device "$where" \
        --workdir "$W/analysis-$where" --max-samples 96 --ratios 2 --num_grams 32 --num_stability 8 \
        --stability_variants original --force > /dev/null
done
"$PY" - "$W/analysis-cpu" "$W/analysis-$DEVICE" "$TOLERANCE" <<'EOF'
import sys
from pathlib import Path

import numpy as np

cpu, other, tolerance = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
worst = 0.0
for path in sorted(cpu.rglob("analysis/projections_*.npz")):
    with np.load(path) as a, np.load(other / path.relative_to(cpu)) as b:
        for key in ("norm00", "norm0", "norm1", "logits"):
            scale = max(float(np.abs(a[key]).max()), 1e-30)
            worst = max(worst, float(np.abs(a[key] - b[key]).max()) / scale)
print(f"  max relative difference of the projection energies and logits, cpu against the device: {worst:.3g}")
sys.exit(0 if worst <= tolerance else f"above {tolerance}")
EOF

step "6. eigh of an all-zero covariance on $DEVICE"
"$PY" - "$DEVICE" "$ROOT" <<'EOF'
import sys

import torch

sys.path.insert(0, sys.argv[2])
from measures.ood import ClassGaussians

device = torch.device(sys.argv[1])
values, vectors = torch.linalg.eigh(torch.zeros(64, 64, dtype=torch.float64, device=device))
assert float(values.abs().max()) == 0 and torch.allclose(vectors.T @ vectors, torch.eye(64, device=device,
                                                                                      dtype=torch.float64))
gaussians = ClassGaussians(2)
gaussians.update(torch.ones(8, 16, device=device), torch.tensor([0, 1] * 4, device=device))
assert float(gaussians.finalize().eigenvalues.abs().max()) == 0
print("  eigh of zeros: eigenvalues 0, orthonormal eigenvectors")
EOF

step "7. an image-folder run through import_weights.py, measured by features.py on $DEVICE"
"$PY" - "$W/folder" "$W/resnet18.pth" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

root, weights = Path(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
for split in ("train", "val"):
    for name in ("n01", "n02", "n03"):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / split / name / f"{i}.jpg")
torch.manual_seed(0)
torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), weights)
EOF
FOLDER=(--model-name torchvision:resnet18 --traindata "imagefolder:$W/folder" --seed 0 --workdir "$W/imported"
        --device "$DEVICE")
"$PY" "$ROOT/import_weights.py" "${FOLDER[@]}" --weights "$W/resnet18.pth"
"$PY" "$ROOT/features.py" "${FOLDER[@]}" --batchsize 4
# several passes over one folder (a pass per network variant): the stage's kept loaders, pinned on a GPU
"$PY" "$ROOT/analyzing.py" "${FOLDER[@]}" --batchsize 4 --ratios 2 --num_grams 8 --num_stability 4 > /dev/null

step "smoke test passed on $DEVICE in $((SECONDS - STARTED)) s"
