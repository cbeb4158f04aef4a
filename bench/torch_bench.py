#!/usr/bin/env python3
"""PyTorch side of strata's benchmark: the same workloads as `strata-bench`, printed as the same
JSON lines (with "system": "torch").

    python3 bench/torch_bench.py [--workload W1,W2,W3,W4,W5,W6|all] [--device cpu|cuda|cuda:N] [--threads N]
                                 [--samples N] [--quick] [--precision f32|bf16]

W1  SimpleNN (784->128->64->10, ReLU) + CrossEntropyLoss + SGD(lr 0.01, momentum 0.9), batch 64,
    training samples/s over an epoch of 60,000 synthetic samples (zero_grad + forward + loss +
    backward + step; batches are views of one in-memory tensor, as in strata).
W2  the same at batch 512.
W3  SimpleNN forward at batch 1 under torch.inference_mode(), microseconds per call.
W4  MLP 784->2048->2048->10 (ReLU), batch 256, training samples/s and GFLOP/s.
W5  the conv ResNet of examples/resnet_mnist_model.toml (3x3 stem, three conv-bn-relu-conv-bn
    residual blocks, the second with stride 2 and a 1x1 projection shortcut, global average
    pooling, Linear 64->10) + CrossEntropyLoss + SGD(lr 0.05, momentum 0.9, weight_decay 5e-4)
    as in examples/resnet_mnist.toml, batch 128, [N, 1, 28, 28] inputs; 151,274 parameters.
W6  the LSTM of examples/lstm_mnist_model.toml (nn.LSTM(28, 128, batch_first=True), last step,
    Linear 128->10) + CrossEntropyLoss + Adam(lr 0.002) as in examples/lstm_mnist.toml, batch
    64, [N, 28, 28] inputs; 82,186 parameters.
W5/W6 time a fixed number of batches after a few warm-up batches.

Everything is PyTorch's defaults (eager mode, optimizer.zero_grad() setting grads to None),
as a user would write it.

--device cuda (or cuda:N): the model is moved to the GPU before its optimizer is made and the
data once, before the warm-up, as PyTorch CUDA benchmarks do; torch.cuda.synchronize() runs
before every timer stops, so queued kernels are counted. Each line then also carries "device"
and "adapter" (the GPU's name). Without CUDA the script says so on stderr and exits with 1.
The default (cpu) runs exactly what it did before --device existed.

--precision bf16 (default f32): PyTorch's standard mixed-precision recipe, strata-bench's
--precision bf16 counterpart. The forward pass and the loss of every workload (W3: every forward
call) run inside torch.autocast(device, dtype=torch.bfloat16); backward and the optimizer step
run outside it, and the parameters stay f32. Every line carries "precision": "f32" or "bf16",
as strata-bench's do.
"""

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn

# The one SimpleNN definition of the tools (the model strata's SimpleNN mirrors).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from simple_nn import SimpleNN  # noqa: E402

EPOCH_SAMPLES = 60_000

# Where the workloads run (set by main from --device): torch.device("cpu") or a CUDA device.
DEVICE = torch.device("cpu")
# The product precision (set by main from --precision): "f32", or "bf16" for autocast.
PRECISION = "f32"


def sync():
    """Waits for the queued CUDA kernels (nothing to wait for on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def autocast():
    """The scope of forward and loss: bf16 autocast under --precision bf16, else nothing."""
    if PRECISION == "bf16":
        return torch.autocast(DEVICE.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Mlp(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(torch.relu(x))
        return x


def conv_bn(cin, cout, k=3, stride=1):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class Residual(nn.Module):
    """body(x) + shortcut(x), the shortcut the identity unless given (strata's Residual layer)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)


class ResNetMNIST(nn.Module):
    """examples/resnet_mnist_model.toml, layer for layer."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            *conv_bn(1, 32), nn.ReLU(),
            Residual([*conv_bn(32, 32), nn.ReLU(), *conv_bn(32, 32)]), nn.ReLU(),
            Residual([*conv_bn(32, 64, stride=2), nn.ReLU(), *conv_bn(64, 64)], conv_bn(32, 64, k=1, stride=2)),
            nn.ReLU(),
            Residual([*conv_bn(64, 64), nn.ReLU(), *conv_bn(64, 64)]), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x)


class LSTMMNIST(nn.Module):
    """examples/lstm_mnist_model.toml: LSTM(28, 128, batch_first) -> last step -> Linear(128, 10)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


def forward_macs(sizes):
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def train_flops_per_sample(sizes):
    # Same count as strata-bench: forward, weight gradients, input gradients except the first layer's.
    return 2.0 * (3.0 * forward_macs(sizes) - sizes[0] * sizes[1])


def synthetic_data(n, features=784, classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def train_epoch(model, opt, criterion, x, y, batch):
    loss = None
    for start in range(0, x.shape[0], batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        opt.zero_grad()
        with autocast():
            loss = criterion(model(xb), yb)
        loss.backward()
        opt.step()
    return loss.item()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def record(workload, threads, **fields):
    out = {"workload": workload, "system": "torch", "threads": threads, "precision": PRECISION}
    if DEVICE.type == "cuda":
        out["device"] = str(DEVICE)
        out["adapter"] = torch.cuda.get_device_name(DEVICE)
    out.update({k: v for k, v in fields.items() if v is not None})
    if "status" not in out:
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def run_simple_nn_training(workload, batch, samples, threads):
    torch.manual_seed(0)
    x, y = synthetic_data(samples)
    x, y = x.to(DEVICE), y.to(DEVICE)
    model, criterion = SimpleNN().to(DEVICE), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    warm = min(20 * batch, samples)
    train_epoch(model, opt, criterion, x[:warm], y[:warm], batch)
    sync()
    t = time.perf_counter()
    loss = train_epoch(model, opt, criterion, x, y, batch)
    sync()
    seconds = time.perf_counter() - t
    flops = train_flops_per_sample([784, 128, 64, 10]) * samples
    return record(workload, threads, batch=batch, samples=samples, seconds=seconds,
                  samples_per_s=samples / seconds, gflop_s=flops / seconds / 1e9, loss=loss)


def run_inference(calls, threads):
    torch.manual_seed(0)
    model = SimpleNN().to(DEVICE)
    x, _ = synthetic_data(1, seed=3)
    x = x.to(DEVICE)
    block = max(calls // 20, 1)
    per_call = []
    with torch.inference_mode(), autocast():
        for _ in range(block):
            model(x)
        sync()
        for _ in range(20):
            t = time.perf_counter()
            for _ in range(block):
                model(x)
            sync()
            per_call.append((time.perf_counter() - t) / block)
    per_call.sort()
    median = per_call[len(per_call) // 2]
    return record("W3", threads, batch=1, samples=block * 20, seconds=sum(per_call) * block,
                  latency_us=median * 1e6, gflop_s=2.0 * forward_macs([784, 128, 64, 10]) / median / 1e9)


def run_big_mlp(steps, threads):
    sizes, batch = [784, 2048, 2048, 10], 256
    torch.manual_seed(0)
    model, criterion = Mlp(sizes).to(DEVICE), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = synthetic_data(batch * steps, seed=2)
    x, y = x.to(DEVICE), y.to(DEVICE)
    train_epoch(model, opt, criterion, x[:2 * batch], y[:2 * batch], batch)
    sync()
    t = time.perf_counter()
    loss = train_epoch(model, opt, criterion, x, y, batch)
    sync()
    seconds = time.perf_counter() - t
    samples = batch * steps
    return record("W4", threads, batch=batch, samples=samples, seconds=seconds, samples_per_s=samples / seconds,
                  gflop_s=train_flops_per_sample(sizes) * samples / seconds / 1e9, loss=loss)


def run_from_model(workload, model, opt, sample, batch, warmup, batches, threads):
    criterion = nn.CrossEntropyLoss()
    n = batch * (warmup + batches)
    x, y = synthetic_data(n, features=math.prod(sample), seed=4)
    x = x.reshape(n, *sample)
    x, y = x.to(DEVICE), y.to(DEVICE)
    warm = batch * warmup
    if warm:
        train_epoch(model, opt, criterion, x[:warm], y[:warm], batch)
    sync()
    t = time.perf_counter()
    loss = train_epoch(model, opt, criterion, x[warm:], y[warm:], batch)
    sync()
    seconds = time.perf_counter() - t
    samples = n - warm
    params = sum(p.numel() for p in model.parameters())
    return record(workload, threads, batch=batch, samples=samples, seconds=seconds, samples_per_s=samples / seconds,
                  loss=loss, params=params)


def run_resnet(warmup, batches, threads):
    torch.manual_seed(0)
    model = ResNetMNIST().to(DEVICE)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return run_from_model("W5", model, opt, (1, 28, 28), 128, warmup, batches, threads)


def run_lstm(warmup, batches, threads):
    torch.manual_seed(0)
    model = LSTMMNIST().to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=0.002)
    return run_from_model("W6", model, opt, (28, 28), 64, warmup, batches, threads)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", "-w", default="all")
    p.add_argument("--device", "-d", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", "-t", type=int, default=None)
    p.add_argument("--samples", type=int, default=EPOCH_SAMPLES)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="f32 (default) or bf16: forward and loss under torch.autocast(dtype=torch.bfloat16)")
    a = p.parse_args()
    global DEVICE, PRECISION
    PRECISION = a.precision
    try:
        DEVICE = torch.device(a.device)
    except RuntimeError:
        p.error(f"--device {a.device!r}: expected cpu, cuda or cuda:N")
    if DEVICE.type not in ("cpu", "cuda"):
        p.error(f"--device {a.device!r}: expected cpu, cuda or cuda:N")
    if DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            print(f"torch_bench.py: --device {a.device}: CUDA is not available to this PyTorch "
                  f"({torch.__version__}, built for CUDA {torch.version.cuda or 'none: a CPU-only build'}): "
                  "no NVIDIA GPU or driver is visible here. Run on a machine with one, or use --device cpu.",
                  file=sys.stderr)
            sys.exit(1)
        index = DEVICE.index if DEVICE.index is not None else 0
        if index >= torch.cuda.device_count():
            print(f"torch_bench.py: --device {a.device}: this machine has {torch.cuda.device_count()} CUDA "
                  f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.", file=sys.stderr)
            sys.exit(1)
        DEVICE = torch.device("cuda", index)
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    samples = min(a.samples, 2048) if a.quick else a.samples
    names = [w.strip().upper() for w in a.workload.split(",")]
    if "ALL" in names:
        names = ["W1", "W2", "W3", "W4", "W5", "W6"]
    for w in names:
        if w == "W1":
            r = run_simple_nn_training("W1", 64, samples, threads)
        elif w == "W2":
            r = run_simple_nn_training("W2", 512, samples, threads)
        elif w == "W3":
            r = run_inference(2_000 if a.quick else 100_000, threads)
        elif w == "W4":
            r = run_big_mlp(2 if a.quick else 24, threads)
        elif w == "W5":
            r = run_resnet(1, 2, threads) if a.quick else run_resnet(3, 20, threads)
        elif w == "W6":
            r = run_lstm(1, 4, threads) if a.quick else run_lstm(5, 60, threads)
        else:
            p.error(f"unknown workload {w!r} (W1-W6 or all)")
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
