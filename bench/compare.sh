#!/usr/bin/env bash
# strata against PyTorch on the same machine, in the same run: W1–W6 at 1 thread and at all
# cores, several repetitions alternating the two systems, medians.
#
#   bench/compare.sh [--device cpu|gpu|gpu:N] [--json] [--reps N] [--threads "1 2"]
#                    [--workloads "W1 W2 W3 W4 W5 W6"] [--quick] [--precision f32|bf16]
#
# Every (workload, thread count, repetition) runs in a fresh process of each system, so the peak
# memory (max RSS) printed is that workload's alone. PyTorch is found through $PYTHON (default
# python3); without it, or without torch, strata's own figures still print. The table needs a
# Python 3 for the arithmetic (any, torch or not); with none, the raw JSON lines are printed.
#
# --device gpu (= gpu:0) or gpu:N: strata runs with --device gpu:N (the adapters of
# `strata devices`), PyTorch with --device cuda:N when torch.cuda.is_available() (else strata's
# figures alone, with a note); one thread setting, all cores, unless --threads is given (threads
# only feed the GPU). On a software adapter (llvmpipe) the table says its figures show
# correctness, not speed. The CPU targets of the ratio table do not apply on a GPU.
#
# --precision bf16 (CPU only): every (workload, thread count, repetition) runs each system in f32
# AND in bf16 (strata-bench --precision bf16 beside PyTorch's torch.autocast(dtype=bfloat16)),
# alternating, so one run prints the f32 tables and a "bf16 (autocast)" table with each system's
# bf16 ÷ f32 speed. The default, --precision f32, runs f32 alone, as before.
#
# STRATA_BENCH_BIN=path runs that strata-bench binary instead of building one with cargo: for a
# machine without a Rust toolchain (a lent GPU machine, say), with a binary built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

JSON=0
DEVICE=cpu
THREADS_GIVEN=0
REPS=5
CORES=$(nproc 2>/dev/null || echo 1)
THREADS="1 $CORES"
[ "$CORES" = 1 ] && THREADS="1"
WORKLOADS="W1 W2 W3 W4 W5 W6"
QUICK=""
PRECISION=f32
while [ $# -gt 0 ]; do
    case "$1" in
        --json) JSON=1 ;;
        --reps) REPS="$2"; shift ;;
        --threads) THREADS="$2"; THREADS_GIVEN=1; shift ;;
        --device) DEVICE="${2:-}"; shift ;;
        --workloads) WORKLOADS="$2"; shift ;;
        --quick) QUICK="--quick" ;;
        --precision) PRECISION="${2:-}"; [ $# -gt 1 ] && shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON="${PYTHON:-python3}"
say() { echo "compare.sh: $*" >&2; }

# strata's device and PyTorch's counterpart (gpu:N -> cuda:N; each system numbers its own GPUs,
# which agree on a machine with one).
case "$DEVICE" in
    cpu) TORCH_DEVICE=cpu ;;
    gpu) DEVICE=gpu:0; TORCH_DEVICE=cuda:0 ;;
    gpu:[0-9]|gpu:[0-9][0-9]) TORCH_DEVICE="cuda:${DEVICE#gpu:}" ;;
    *) echo "compare.sh: unknown device '$DEVICE': expected cpu, gpu or gpu:N (see --help)" >&2; exit 2 ;;
esac
if [ "$DEVICE" != cpu ] && [ "$THREADS_GIVEN" = 0 ]; then
    THREADS="$CORES"
fi
# The precisions each (workload, threads, repetition) runs in: f32 alone, or f32 and bf16.
case "$PRECISION" in
    f32) PRECISIONS="f32" ;;
    bf16)
        if [ "$DEVICE" != cpu ]; then
            echo "compare.sh: --precision bf16 runs on the CPU only (strata's bf16 autocast is CPU-only): drop --device $DEVICE or --precision bf16" >&2
            exit 2
        fi
        PRECISIONS="f32 bf16" ;;
    *) echo "compare.sh: unknown precision '$PRECISION': expected f32 or bf16 (see --help)" >&2; exit 2 ;;
esac

if [ -n "${STRATA_BENCH_BIN:-}" ]; then
    BIN="$STRATA_BENCH_BIN"
    [ -x "$BIN" ] || { say "STRATA_BENCH_BIN=$BIN is not an executable file"; exit 2; }
    say "using $BIN (STRATA_BENCH_BIN), not building"
else
    say "building strata-bench (release)"
    cargo build --release --quiet -p strata-bench
    BIN="${CARGO_TARGET_DIR:-target}/release/strata-bench"
fi

HAVE_TORCH=0
TORCH_NOTE=""
if command -v "$PYTHON" >/dev/null 2>&1 && "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    HAVE_TORCH=1
    TORCH_VERSION=$("$PYTHON" -c "import torch; print(torch.__version__)")
    if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        HAVE_TORCH=0
        TORCH_NOTE="not run: CUDA is not available to PyTorch $TORCH_VERSION here"
        say "PyTorch $TORCH_VERSION has no CUDA device here: printing strata's $DEVICE figures only"
    fi
else
    TORCH_VERSION=""
    say "PyTorch not found through \$PYTHON=$PYTHON: printing strata's figures only"
fi
REPORT_PY=""
for p in "$PYTHON" python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c "import sys; assert sys.version_info >= (3, 8)" 2>/dev/null; then
        REPORT_PY="$p"
        break
    fi
done

LINES=$(mktemp)
trap 'rm -f "$LINES"' EXIT

# On the CPU the command lines are the ones used before --device existed.
STRATA_DEVICE_ARGS=""
TORCH_DEVICE_ARGS=""
if [ "$DEVICE" != cpu ]; then
    STRATA_DEVICE_ARGS="--device $DEVICE"
    TORCH_DEVICE_ARGS="--device $TORCH_DEVICE"
fi
# $3 is the precision; f32 passes no flag, so the f32 command lines are the ones used before
# --precision existed.
precision_args() { [ "$1" = f32 ] || echo "--precision $1"; }
run_strata() {
    local prec_args
    prec_args=$(precision_args "$3")
    "$BIN" --workload "$1" --threads "$2" $STRATA_DEVICE_ARGS $prec_args $QUICK >>"$LINES" || {
        say "strata-bench failed on $1 at $2 threads${STRATA_DEVICE_ARGS:+ ($STRATA_DEVICE_ARGS)}${prec_args:+ ($prec_args)}: its message is above"
        exit 1
    }
}
run_torch() {
    [ "$HAVE_TORCH" = 1 ] || return 0
    OMP_NUM_THREADS="$2" MKL_NUM_THREADS="$2" "$PYTHON" bench/torch_bench.py --workload "$1" --threads "$2" $TORCH_DEVICE_ARGS $(precision_args "$3") $QUICK >>"$LINES"
}

for rep in $(seq 1 "$REPS"); do
    say "repetition $rep/$REPS"
    for w in $WORKLOADS; do
        for t in $THREADS; do
            # Alternate which system (and, with bf16, which precision) goes first, so slow drifts
            # of the machine hit all alike.
            precs="$PRECISIONS"
            if [ $((rep % 2)) = 0 ] && [ "$PRECISIONS" = "f32 bf16" ]; then precs="bf16 f32"; fi
            for p in $precs; do
                if [ $((rep % 2)) = 1 ]; then run_strata "$w" "$t" "$p"; run_torch "$w" "$t" "$p"
                else run_torch "$w" "$t" "$p"; run_strata "$w" "$t" "$p"; fi
            done
        done
    done
done

CPU=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
case "$FLAGS" in *avx512f*) SIMD="AVX-512" ;; *avx2*) SIMD="AVX2" ;; *) SIMD="no AVX2" ;; esac
export CMP_CPU="$CPU ($CORES cores, $SIMD)"
export CMP_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
export CMP_STRATA="strata $(cargo pkgid -p strata-core 2>/dev/null | sed 's/.*[#@]//') ($(git rev-parse --short HEAD 2>/dev/null || echo no git)$(git diff --quiet 2>/dev/null || echo ', modified'))"
export CMP_TORCH="$TORCH_VERSION"
export CMP_TORCH_NOTE="$TORCH_NOTE"
export CMP_DEVICE="$DEVICE"
export CMP_PYTHON=$([ -n "$REPORT_PY" ] && "$REPORT_PY" -c "import platform; print(platform.python_version())" || echo "")
export CMP_DATE=$(date -u +%Y-%m-%d)
export CMP_REPS="$REPS"
export CMP_JSON="$JSON"

if [ -z "$REPORT_PY" ]; then
    say "no Python 3 found for the table: raw results follow"
    cat "$LINES"
    exit 0
fi
"$REPORT_PY" bench/report.py "$LINES"
