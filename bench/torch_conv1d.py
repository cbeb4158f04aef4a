#!/usr/bin/env python3
"""PyTorch's side of the Conv1d example's speed check (bench/README.md, "Conv1d"): the model of
examples/conv1d_mnist_model.toml, Adam, batch 64, on MNIST-sized random data held in memory;
training samples per second, the median of 5 passes of 50 steps after one warm-up pass.

    python3 bench/torch_conv1d.py [THREADS]      # default 2
"""

import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)
model = nn.Sequential(OrderedDict(
    conv1=nn.Conv1d(28, 64, 5, padding=2), bn1=nn.BatchNorm1d(64), r1=nn.ReLU(), pool1=nn.MaxPool1d(2),
    conv2=nn.Conv1d(64, 128, 3, padding=1), bn2=nn.BatchNorm1d(128), r2=nn.ReLU(),
    pool2=nn.AdaptiveAvgPool1d(1), flat=nn.Flatten(), fc=nn.Linear(128, 10)))
opt = torch.optim.Adam(model.parameters(), lr=0.002)
loss_fn = nn.CrossEntropyLoss()
STEPS, BATCH = 50, 64
x = torch.randn(STEPS * BATCH, 28, 28)
y = torch.randint(0, 10, (STEPS * BATCH,))


def one_pass():
    for i in range(STEPS):
        xb, yb = x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()


one_pass()
times = []
for _ in range(5):
    t = time.perf_counter()
    one_pass()
    times.append(time.perf_counter() - t)
times.sort()
print(f"torch {torch.__version__}: {STEPS * BATCH / times[2]:,.0f} samples/s (median of 5 x {STEPS} steps, batch {BATCH})")
