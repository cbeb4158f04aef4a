#!/usr/bin/env python3
"""PyTorch's counterpart of `cargo run --release -p strata-bench --example step_times`: the fastest
and the median training step of W5 or W6 (models from torch_bench.py), for a busy machine.

    python3 bench/torch_step_times.py W5|W6 [STEPS] [THREADS]
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_bench as tb  # noqa: E402


def main():
    workload = sys.argv[1].upper() if len(sys.argv) > 1 else "W6"
    steps = max(int(sys.argv[2]) if len(sys.argv) > 2 else 40, 1)
    if len(sys.argv) > 3:
        torch.set_num_threads(int(sys.argv[3]))
    torch.manual_seed(0)
    if workload == "W5":
        model, batch, shape = tb.ResNetMNIST(), 128, (1, 28, 28)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    elif workload == "W6":
        model, batch, shape = tb.LSTMMNIST(), 64, (28, 28)
        opt = torch.optim.Adam(model.parameters(), lr=0.002)
    else:
        sys.exit(f"torch_step_times.py: unknown workload {workload!r} (W5 or W6)")
    criterion = torch.nn.CrossEntropyLoss()
    x, y = torch.rand(4 * batch, *shape), torch.randint(0, 10, (4 * batch,))
    times = []
    for s in range(steps):
        i = s % 4
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        t = time.perf_counter()
        opt.zero_grad()
        criterion(model(xb), yb).backward()
        opt.step()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(f"torch  {workload} {torch.get_num_threads()} threads, step ms: min {times[0]:.3f} "
          f"median {times[len(times) // 2]:.3f}  => best {batch / times[0] * 1e3:.0f} samples/s")


if __name__ == "__main__":
    main()
