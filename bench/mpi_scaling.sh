#!/usr/bin/env bash
# One process against two MPI processes on this machine: SimpleNN at batch 512 (W2's shape) and
# the conv ResNet at batch 128 (W5's), on the embedded data, as 1 process × 1 thread, 1 process ×
# 2 threads and 2 processes × 1 thread (gradient buckets exchanged during backward, the default,
# and one bucket after backward); prints the median samples/s of each (W2: epochs 3–10).
# Needs the release binary with MPI: cargo build --release -p strata-cli --features mpi
#   bench/mpi_scaling.sh [REPS]      (default 3 repetitions)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
strata=$PWD/target/release/strata
root=$PWD
[ -x "$strata" ] || { echo "build it first: cargo build --release -p strata-cli --features mpi" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mpirun=(mpirun --oversubscribe -np 2)
[ "$(id -u)" = 0 ] && mpirun=(mpirun --allow-run-as-root --oversubscribe -np 2)
cat > "$tmp/w2.toml" <<TOML
model = "$root/examples/simple_nn.toml"
[optimizer]
name = "sgd"
lr = 0.01
momentum = 0.9
[training]
epochs = 10
batch_size = 512
seed = 1
threads = 1
TOML
cat > "$tmp/w5.toml" <<TOML
model = "$root/examples/resnet_mnist_model.toml"
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
weight_decay = 5e-4
[training]
epochs = 2
batch_size = 128
seed = 1
threads = 1
TOML
rates() { grep -oE "[0-9,]+ samples/s" | tr -d ',' | cut -d' ' -f1 | tr '\n' ' '; }
for w in w2 w5; do
    for rep in $(seq "$reps"); do
        rm -rf "$tmp/out"
        echo "$w|1 process, 1 thread|$("$strata" train "$tmp/$w.toml" --out "$tmp/out" 2>&1 | rates)"
        rm -rf "$tmp/out"
        echo "$w|1 process, 2 threads|$("$strata" train "$tmp/$w.toml" --threads 2 --out "$tmp/out" 2>&1 | rates)"
        rm -rf "$tmp/out"
        echo "$w|2 processes, 1 thread each|$("${mpirun[@]}" "$strata" train "$tmp/$w.toml" --out "$tmp/out" 2>&1 | rates)"
        rm -rf "$tmp/out"
        echo "$w|2 processes, one bucket after backward|$("${mpirun[@]}" "$strata" train "$tmp/$w.toml" --bucket-cap-mb 0 --out "$tmp/out" 2>&1 | rates)"
    done
done | python3 -c '
import sys, statistics
runs = {}
for line in sys.stdin:
    w, kind, vals = line.rstrip("\n").split("|")
    v = [float(x) for x in vals.split()]
    runs.setdefault((w, kind), []).extend(v[2:] if w == "w2" else v)
for (w, kind), v in runs.items():
    print(f"{w}  {kind:40} median {statistics.median(v):>10,.0f} samples/s  ({len(v)} epochs, {min(v):,.0f}–{max(v):,.0f})")
'
