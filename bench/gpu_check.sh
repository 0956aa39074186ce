#!/usr/bin/env bash
# The GPU checks of issue 18 as one prepared run, for one `device` call of under 9 minutes; figures go to $OUT.
#
#   bash bench/gpu_check.sh          on the GPU machine (the device tool sets OUT; `carry: [".whl"]`, see below)
#   bash bench/gpu_check.sh --cpu    the same steps on tiny models and small chips, on this machine's CPUs
#
# Steps, each under its own time limit so that one hang cannot eat the others' time:
#   1. env          nvidia-smi, torch/CUDA versions, the installed packages that shape results
#   2. zero3        full FT vs LoRA under deepspeed_zero3 + bf16, and full FT under DDP + bf16, each a real cell
#                   (bench/gpu_cells.py) with CUDA_LAUNCH_BLOCKING=1: the "misaligned address" crash names its kernel
#   3. peft_cost    bench/peft_cost.py at the target's setting: Prithvi 2.0 300M + UperNet, batch 8, 512², bf16,
#                   with and without activation checkpointing: LoRA / full FT peak memory (target <= 0.65), step time
#   4. data_wait    bench/data_wait.py: a Sen1Floods11-sized cell (512², batch 8) with 0, 4 and 8 workers
#   5. ddp          bench/ddp_scaling.py, 1 vs 2 GPUs, when the machine has two
# A summary of every step's exit status is $OUT/summary.txt.
#
# The GPU machine has torch, timm, peft, h5py, pandas but not rasterio, submitit or deepspeed (the device tool's
# KINDS.md; hdf5plugin is not needed for the default codec). Fetch their wheels first, on a machine with the registries: `bash bench/gpu_wheels.sh` writes
# them to .whl/ (ignored by git); this script installs what it finds there into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
[[ "${1:-}" == "--cpu" ]] && mode=cpu
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python && "$mode" == cpu ]] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE DS_BUILD_OPS=0
: >"$OUT/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run it, its output to $OUT/NAME.txt, its status to summary.txt
    local name="$1" limit="$2"
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "   exit $rc after $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt"
}

if [[ "$mode" == gpu ]]; then
    big=prithvi_eo_v2_300 mid=prithvi_eo_v1_100 size=512 batch=8 device=cuda workers=(0 4 8) limits=(30 150 180 120 60)
else
    big=prithvi_tiny mid=prithvi_tiny size=64 batch=4 device=cpu workers=(0 1 2) limits=(30 240 240 180 60)
fi

step env "${limits[0]}" bash -c "nvidia-smi || true; $PY -c 'import sys, torch; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); \
[print(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]'; \
$PY -m pip list 2>/dev/null | grep -i -E '^(torch|timm|peft|deepspeed|h5py|rasterio|submitit|numpy) ' || true"

CUDA_LAUNCH_BLOCKING=1 step zero3 "${limits[1]}" "$PY" bench/gpu_cells.py --model "$big" --decoder upernet \
    --size "$size" --batch 4 --chips 8 --epochs 1 --device "$device" \
    --cells full:deepspeed_zero3:bf16 lora:deepspeed_zero3:bf16 full:ddp:bf16

step peft_cost "${limits[2]}" "$PY" bench/peft_cost.py --backbone "$big" --decoder upernet --batch "$batch" \
    --size "$size" --bf16 --checkpointing both --methods full,lora --steps 3 --warmup 1 --device "$device"

step data_wait "${limits[3]}" "$PY" bench/data_wait.py --model "$mid" --decoder upernet --size "$size" \
    --batch "$batch" --chips 48 --epochs 1 --precision bf16 --threads 4 --workers "${workers[@]}" --device "$device"

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [[ "$mode" == cpu || "$gpus" -ge 2 ]]; then
    step ddp "${limits[4]}" "$PY" bench/ddp_scaling.py --model "$mid" --size 128 --steps 10 --warmup 3
else
    echo "== ddp: skipped, this machine has $gpus GPU(s)" | tee -a "$OUT/summary.txt"
fi
echo "figures: $OUT (summary.txt and one .txt per step)"
