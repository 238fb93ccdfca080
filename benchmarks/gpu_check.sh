#!/usr/bin/env bash
# Everything the GAN's GPU path needs checked, in one run of under 10 minutes on one H200:
#   1. throughput  images/s at 32, 64 and 128 px per preset: bioaug's trainer (bf16 autocast, channels-last)
#                  against a bare loop of the same networks in the same run, with peak GPU memory
#                  (torch.cuda.max_memory_allocated) per case            -> throughput.json
#   2. compile     the trainer with torch.compile at 32 px (last preset), against the bare loop -> compile.json
#   3. resume      N steps straight vs N/2 + a resumed N/2, every weight compared with the run-to-run
#                  difference of two straight runs                        -> resume.json
#   4. ddp         a 2-process torchrun run (NCCL with a GPU each; gloo when they share one GPU), checked for
#                  one writer, both ranks' RNG states and finite losses   -> ddp.json
# Each check has its own time limit; a failing check is logged loudly and the next one still runs. The
# summary (every check's status and seconds, and the details above) goes to $OUT/gpu_check.json and the
# full output to $OUT/gpu_check.log; the exit status is 1 when any check failed.
#
#   benchmarks/gpu_check.sh                       # on the GPU machine; OUT defaults to benchmarks/results/gpu
#   GPU_CHECK_SMOKE=1 OUT=/tmp/gpu benchmarks/gpu_check.sh   # every check for a few steps on the CPU
#
# Settings (environment): PRESETS (default "plain resnet fastgan"), SIZES ("32 64 128"), STEPS (timed steps per
# throughput case, 100), RESUME_STEPS (100), DDP_STEPS (20), COMPILE_PRESET (the last of PRESETS; plain in
# the smoke run, where compiling the residual networks on a loaded CPU outlasts any sensible limit), PYTHON
# (python3, or .venv/bin/python if there). The time limits add up to 560 s. The DDP check trains the last
# preset, so fastgan's reconstruction loss goes through DistributedDataParallel's forward.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
CHECKS=$OUT/checks.jsonl
: >"$LOG"
: >"$CHECKS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

PRESETS=${PRESETS:-plain resnet fastgan}
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu SIZES=${SIZES:-32} STEPS=${STEPS:-2} RESUME_STEPS=${RESUME_STEPS:-4} DDP_STEPS=${DDP_STEPS:-4}
    SMALL=(--channels 8 --max-channels 32 --batch-size 12 --z-dim 16)
    RESUME_SMALL=(--channels 8)
    COMPILE_PRESET=${COMPILE_PRESET:-plain}
    LIMIT_SCALE=3  # a loaded 2-core CPU, not a GPU
else
    DEVICE=cuda SIZES=${SIZES:-32 64 128} STEPS=${STEPS:-100} RESUME_STEPS=${RESUME_STEPS:-100}
    DDP_STEPS=${DDP_STEPS:-20}
    SMALL=()
    RESUME_SMALL=()
    COMPILE_PRESET=${COMPILE_PRESET:-${PRESETS##* }}
    LIMIT_SCALE=1
fi

# check NAME SECONDS COMMAND...: run it under a time limit, log its output, record its status.
check() {
    local name=$1 limit=$(($2 * LIMIT_SCALE)) start rc status
    shift 2
    echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    if [ "$status" != ok ]; then
        echo "!!! CHECK FAILED: $name ($status, exit $rc); see $LOG" | tee -a "$LOG" >&2
    fi
    printf '{"name": "%s", "status": "%s", "exit": %d, "seconds": %d}\n' \
        "$name" "$status" "$rc" "$(($(date +%s) - start))" >>"$CHECKS"
}

check environment 20 "$PYTHON" -c "
import platform, torch
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu only')
print('bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device visible to torch'
"
# shellcheck disable=SC2086  # word splitting of SIZES and PRESETS is intended
check throughput 250 "$PYTHON" benchmarks/gan_throughput.py --device "$DEVICE" --sizes $SIZES \
    --presets $PRESETS --cases minimal trainer --steps "$STEPS" --repeats 1 --out "$OUT/throughput.json"
check compile 100 "$PYTHON" benchmarks/gan_throughput.py --device "$DEVICE" --sizes 32 --presets "$COMPILE_PRESET" \
    --cases trainer+compile --steps "$STEPS" --repeats 1 --out "$OUT/compile.json"
check store 20 "$PYTHON" benchmarks/gpu_check.py store "$WORK/store" --size 32
# shellcheck disable=SC2086
check resume 90 "$PYTHON" benchmarks/gpu_check.py --json "$OUT/resume.json" resume --store "$WORK/store" \
    --work "$WORK/resume" --presets $PRESETS --steps "$RESUME_STEPS" --device "$DEVICE" "${RESUME_SMALL[@]}"
check ddp 60 "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node 2 -m bioaug.cli train \
    "$WORK/store" --out "$WORK/ddp" --new --quiet --preset "${PRESETS##* }" --steps "$DDP_STEPS" \
    --device "$DEVICE" --log-every 5 --snapshot-every 1000 --checkpoint-every 1000 "${SMALL[@]}"
check ddp-verify 20 "$PYTHON" benchmarks/gpu_check.py --json "$OUT/ddp.json" ddp-verify "$WORK/ddp" \
    --steps "$DDP_STEPS" --world-size 2

"$PYTHON" benchmarks/gpu_check.py summary "$OUT" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
rm -f "$CHECKS"
exit "$status"
