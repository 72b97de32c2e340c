#!/usr/bin/env bash
# The pearson-paper protocol's GPU checks, in one call (about 10 minutes on one H100/H200).
# Run on a lent GPU machine from the repository root, after `bash scripts/install.sh`:
#   bash scripts/gpu_protocol.sh [OUT_DIR]
# 1. `bench gpu` and `bench protocol-gpu`: img/s of the teacher fine-tune, KDFS and Pearson at 256 px with AMP and
#    channels_last (the 140k settings, batch 128), the largest batch of each, the projected wall time of a 140k run.
# 2. The protocol's first epochs on real images: the embedded benchmark's faceswap source rendered at 256 px, the
#    published 140k teacher fine-tune (from random weights: nothing can be downloaded there), then KDFS and Pearson,
#    2 epochs each, as the engine runs them (data loading included). Their metrics.jsonl hold img/s per epoch.
set -euo pipefail
OUT=${1:-${OUT:-bench/results/gpu}}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" || true
$PY -m core bench gpu --out "$OUT" --json | tail -1
$PY -m core bench protocol-gpu --out "$OUT" --json | tail -1
DATA="$OUT/synthetic256"
$PY -m core data synth --out "$DATA" --image-size 256 --per-source 1200 --sources faceswap --if-missing --quiet
RUNS="$OUT/runs"
COMMON=(--data synthetic:faceswap --data-root "$DATA" --preset 140k --epochs 2 --runs-dir "$RUNS" --quiet --json)
TEACHER=$($PY -m core train --method teacher --pretrained none "${COMMON[@]}" | tail -1 | $PY -c "import json,sys; print(json.load(sys.stdin)['run_dir'])")
for METHOD in kdfs pearson; do
  $PY -m core train --method "$METHOD" --teacher "$TEACHER" "${COMMON[@]}" | tail -1
done
$PY - "$RUNS" > "$OUT/protocol-epochs.json" <<'PY'
import json, sys
from pathlib import Path
rows = []
for run in sorted(Path(sys.argv[1]).glob("*/metrics.jsonl")):
    config = json.loads((run.parent / "config.json").read_text())
    for line in run.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "epoch":
            rows.append({"method": config["method"], "epoch": record["epoch"], "images_per_s": record["images_per_s"],
                         "train_seconds": record["train_seconds"], "val_accuracy": record["val_accuracy"],
                         "macs_reduction": record.get("macs_reduction")})
print(json.dumps(rows, indent=1))
PY
cat "$OUT/protocol-epochs.json"
