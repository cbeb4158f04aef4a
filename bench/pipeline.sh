#!/usr/bin/env bash
# Pipelined training (GPipe, `--pipeline-chunks K`) against the same micro-batches run one
# after another (`--accumulate K`, the same numbers bit for bit) and against the plain batch,
# on a model split over gpu:0 and the CPU (bench/pipeline/cpu_gpu.toml).
#
#   bench/pipeline.sh [--reps N] [--chunks "4 8"] [--epochs N]
#
# Each configuration runs in a fresh `strata train` process, alternating, N times (default 3);
# the table gives the median samples/s of the last epoch and each pipelined run's ratio to its
# accumulation. On a machine whose only GPU is Mesa's llvmpipe the "devices" share the CPU: the
# script gives each one core (`--threads 1` for strata's CPU backend, LP_NUM_THREADS=1 for
# llvmpipe), so that they are separate compute as two devices are. Needs a GPU adapter
# (`strata devices`).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=3
chunks="4 8"
epochs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --chunks) chunks="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    *) echo "bench/pipeline.sh: unknown option $1 (--reps N, --chunks \"4 8\", --epochs N)" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p strata-cli
bin=target/release/strata
if ! "$bin" devices 2>/dev/null | grep -q "^gpu:0"; then
  echo "bench/pipeline.sh: no GPU adapter (strata devices lists none); install mesa-vulkan-drivers for llvmpipe" >&2
  exit 1
fi
modes=("plain")
for k in $chunks; do modes+=("--accumulate $k" "--pipeline-chunks $k"); done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for rep in $(seq "$reps"); do
  for mode in "${modes[@]}"; do
    flags=""
    [ "$mode" != plain ] && flags="$mode"
    # shellcheck disable=SC2086
    rate=$(LP_NUM_THREADS=1 "$bin" train --model bench/pipeline/cpu_gpu.toml --epochs "$epochs" --batch-size 256 \
      --threads 1 $flags 2>/dev/null | grep "^epoch *$epochs/$epochs" | grep -o "[0-9,]* samples/s" | tr -d ', samples/')
    echo "$mode|$rate" >>"$out"
    echo "rep $rep: $mode: $rate samples/s" >&2
  done
done
python3 - "$out" "$chunks" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, rate = line.rstrip("\n").split("|")
    rows.setdefault(mode, []).append(float(rate))
med = {m: statistics.median(v) for m, v in rows.items()}
print(f"{'run':24} {'samples/s (median)':>20} {'vs accumulate':>14} {'vs plain':>9}")
print(f"{'plain batch':24} {med['plain']:>20,.0f}")
for k in sys.argv[2].split():
    a, p = med[f"--accumulate {k}"], med[f"--pipeline-chunks {k}"]
    print(f"{'--accumulate ' + k:24} {a:>20,.0f} {'':>14} {a / med['plain']:>8.2f}x")
    print(f"{'--pipeline-chunks ' + k:24} {p:>20,.0f} {p / a:>13.2f}x {p / med['plain']:>8.2f}x")
PY
