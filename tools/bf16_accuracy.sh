#!/usr/bin/env bash
# bf16 against f32 on full MNIST (issue 19, point 3): each example run file trained twice, in f32
# and with --precision bf16, from the same seed; prints both test accuracies and fails when bf16
# is more than 0.2 points below f32.
#
#   tools/bf16_accuracy.sh [DATA_DIR]     (default ../shared/data/mnist)
#
# Release build; ~10 minutes on a 2-core machine, most of it the ResNet.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/mnist}"
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
    echo "bf16_accuracy.sh: skipped: no MNIST at $DATA (give its folder as the argument)" >&2
    exit 0
fi
cargo build --release --quiet -p strata-cli
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
FAIL=0
printf '%-26s %9s %9s %9s %8s %8s\n' "run file" "f32 test" "bf16 test" "bf16−f32" "f32 s" "bf16 s"
for run in simple_nn_mnist residual_mlp_mnist lstm_mnist resnet_mnist; do
    declare -A acc secs
    for p in f32 bf16; do
        start=$(date +%s.%N)
        line=$(./target/release/strata train "examples/$run.toml" --data "$DATA" --precision "$p" \
            --out "$OUT/$run-$p" --quiet | grep '^done in')
        end=$(date +%s.%N)
        acc[$p]=$(sed -n 's/.*test accuracy \([0-9.]*\)%.*/\1/p' <<<"$line")
        secs[$p]=$(python3 -c "print(f'{$end - $start:.1f}')")
    done
    diff=$(python3 -c "print(f'{${acc[bf16]} - ${acc[f32]}:+.2f}')")
    printf '%-26s %8s%% %8s%% %9s %8s %8s\n' "$run" "${acc[f32]}" "${acc[bf16]}" "$diff" "${secs[f32]}" "${secs[bf16]}"
    if python3 -c "import sys; sys.exit(0 if ${acc[bf16]} >= ${acc[f32]} - 0.2 else 1)"; then :; else FAIL=1; fi
done
if [ "$FAIL" = 1 ]; then
    echo "bf16_accuracy.sh: bf16 fell more than 0.2 points below f32" >&2
    exit 1
fi
