#!/usr/bin/env bash
# Train several directions at once on one lent GPU, in one device call, and pack what comes
# back. The device machine's python3 has torch, sentencepiece, sacrebleu and safetensors;
# ../shared does not travel, so copy the corpus into an ignored folder first, here:
#
#   mkdir -p .gpu-data && cp -r ../shared/data/multi30k .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
#   device run: carry [".gpu-data"], command "bash scripts/gpu-train.sh", timeout_s 600
#   then, here: bash scripts/gpu-train.sh unpack <files_at>
#
# $OUT takes at most 8 files of 16 MiB: each model's weights travel as fp16 (15 MB), the rest
# of its directory in one tarball; `unpack` turns the weights back into fp32 safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-"en-fr fr-en en-cs cs-en"}
MINUTES=${MINUTES:-8}
DEVICE=${DEVICE:-cuda}
DATA=${MULTI30K_DIR:-.gpu-data/multi30k}
OUT=${OUT:-gpu-out}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-$(($(nproc) / $(wc -w <<<"$PAIRS")))}

if [[ "${1:-}" == unpack ]]; then
    from=$2
    for tarball in "$from"/*.tar.gz; do
        pair=$(basename "$tarball" .tar.gz)
        mkdir -p "models/$pair"
        tar -xzf "$tarball" -C "models/$pair"
        "$PYTHON" - "$from/$pair.fp16.safetensors" "models/$pair/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
save_file({k: v.float() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PY
        echo "models/$pair"
    done
    exit 0
fi

mkdir -p runs "$OUT"
[[ "$DEVICE" == cuda ]] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pids=()
for pair in $PAIRS; do
    PYTHONUNBUFFERED=1 PYTHONPATH=. "$PYTHON" -m model.train --config "configs/$pair.json" \
        --device "$DEVICE" --threads "$THREADS" --data-dir "$DATA" --run-dir "runs/$pair" \
        --out "runs/$pair/model" --max-minutes "$MINUTES" >"runs/$pair.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

for pair in $PAIRS; do
    grep -E "epoch [0-9]+ step|wrote|Error" "runs/$pair.log" | tail -n 3 || true
    model="runs/$pair/model"
    [[ -f "$model/model.safetensors" ]] || continue
    "$PYTHON" - "$model/model.safetensors" "$OUT/$pair.fp16.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
save_file({k: v.half() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PY
    tar -czf "$OUT/$pair.tar.gz" -C "$model" --exclude model.safetensors .
done
exit $status
