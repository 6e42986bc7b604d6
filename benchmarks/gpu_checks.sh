#!/usr/bin/env bash
# Issue 12's GPU checks as one prepared command, for a lent GPU machine (the `device` tool) or any
# CUDA machine with PyTorch: the original workload timed in full (bf16, then bf16 + torch.compile),
# the precisions 32 / bf16 / 16 with their PSNR, and the batched β sweep against one by one.
#
# Torch only: the lent machines hold PyTorch with CUDA but no TensorFlow, whose wheel is larger than
# what may travel there. Nor can they test NCCL: they have one GPU, and NCCL needs a GPU per process
# (with one process the run is not distributed at all). Each step has its own time limit so that one
# slow step leaves the rest their time; the whole fits in about 8 minutes.
#
#   bash benchmarks/gpu_checks.sh DATA OUT
#       DATA  the real CSV (on a lent machine: a copy in a git-ignored folder named in `carry`;
#             never commit it), or synthetic:N
#       OUT   folder for summary.txt, log.txt and the benchmarks' JSON (at most 8 files: what the
#             device tool brings back); run folders go to a temporary folder
#
# Dry run of the same steps on a CPU, tiny (tests/unit/test_gpu_checks.py does it without the
# compile step, which takes a minute on 2 cores; GPU_CHECKS_SKIP names steps to leave out):
#   GPU_CHECKS_DEVICE=cpu GPU_CHECKS_TINY=1 PY=.venv/bin/python bash benchmarks/gpu_checks.sh synthetic:300 /tmp/gpu
set -u
DATA=${1:?usage: gpu_checks.sh DATA OUT}
OUT=${2:?usage: gpu_checks.sh DATA OUT}
PY=${PY:-python3}
DEVICE=${GPU_CHECKS_DEVICE:-cuda}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: > "$OUT/summary.txt"
: > "$OUT/log.txt"

if [ -n "${GPU_CHECKS_TINY:-}" ]; then  # the steps' plumbing only: seconds on a CPU
    SEED_ARGS=(--models cnn:gender,vae:16 --scale 0.01 --channels 8,16 --hidden-dims 32 --figure-n 4 --grid 3)
    PREC_DATA=synthetic:64 PREC_EPOCHS=1
    BATCH_ARGS=(--n 64 --epochs 1 --reps 1 --betas 0.1,1 --channels 8,16 --hidden 32 --image-size 32)
    LIMITS=(120 120 120 120)
else
    SEED_ARGS=()
    PREC_DATA=synthetic:4000 PREC_EPOCHS=3
    BATCH_ARGS=(--reps 2)
    LIMITS=(150 180 90 60)
fi

step() {  # step NAME LIMIT_S COMMAND...: runs it, appends its output to log.txt, one line to summary.txt
    local name=$1 limit=$2 start rc
    shift 2
    case " ${GPU_CHECKS_SKIP:-} " in *" $name "*) echo "$name skipped" | tee -a "$OUT/summary.txt"; return;; esac
    start=$(date +%s%N)
    echo "=== $name: $*" >> "$OUT/log.txt"
    timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
    rc=$?
    printf '%-18s rc=%-3s %5d s  (limit %s s; rc 124: over it)\n' "$name" "$rc" \
        $(( ($(date +%s%N) - start) / 1000000000 )) "$limit" | tee -a "$OUT/summary.txt"
}

{
    echo "gpu_checks on $(hostname) at $(date -u +%FT%TZ), device $DEVICE, data $DATA"
    command -v nvidia-smi > /dev/null && nvidia-smi -L
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} 2>&1 | tee -a "$OUT/summary.txt"

step seed_bf16 "${LIMITS[0]}" "$PY" "$HERE/benchmarks/seed_workload.py" --data "$DATA" --device "$DEVICE" \
    --precision bf16 "${SEED_ARGS[@]}" --out "$WORK/seed_bf16" --json "$OUT/seed_workload_bf16.json"
step seed_bf16_compile "${LIMITS[1]}" "$PY" "$HERE/benchmarks/seed_workload.py" --data "$DATA" --device "$DEVICE" \
    --precision bf16 --compile "${SEED_ARGS[@]}" --out "$WORK/seed_compile" --json "$OUT/seed_workload_compile.json"
if [ "$DEVICE" = cuda ]; then PRECISIONS=32,bf16,16; else PRECISIONS=32,bf16; fi  # float16 is GPU-only
step precision "${LIMITS[2]}" "$PY" "$HERE/benchmarks/precision.py" --backends torch --precisions "$PRECISIONS" \
    --device "$DEVICE" --data "$PREC_DATA" --epochs "$PREC_EPOCHS"
cp "$HERE/benchmarks/results/precision/${PREC_DATA/:/_}/results.json" "$OUT/precision.json" 2> /dev/null
step batched_sweep "${LIMITS[3]}" "$PY" "$HERE/benchmarks/batched_sweep.py" --device "$DEVICE" "${BATCH_ARGS[@]}"
cp "$HERE/benchmarks/results/batched/raw.json" "$OUT/batched_sweep.json" 2> /dev/null
rm -rf "$WORK"
