#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's parity tests.

Writes ``crates/nn/tests/fixtures/simple_nn_parity.safetensors`` (via
``safetensors.torch.save_file``) so the Rust tests need no PyTorch at test
time.  Regenerate with::

    python3 tools/make_fixtures.py

Global settings (applied before anything else)::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

All float tensors are float32 unless a group says float64; integer targets are
int64.  Scalars (losses) are stored as 0-dim tensors (shape ``[]``).  The
safetensors metadata holds ``torch_version`` and ``generator``.

The exact torch code behind every group of keys follows.

Model / input (group ``init.*``, ``input``, ``target``)
-------------------------------------------------------
::

    class SimpleNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 64)
            self.fc3 = nn.Linear(64, 10)
        def forward(self, x):
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            return self.fc3(x)

    torch.manual_seed(0)
    model = SimpleNN()
    x = torch.randn(16, 784)
    target = torch.randint(0, 10, (16,))
    # init.<k> = model.state_dict()[k] for k in
    #   fc1.weight [128,784], fc1.bias [128], fc2.weight [64,128],
    #   fc2.bias [64], fc3.weight [10,64], fc3.bias [10]
    # input = x [16,784] f32, target [16] int64

Forward / backward at the initial params (``logits``, ``loss``, ``grad.*``)
--------------------------------------------------------------------------
::

    logits = model(x)                                 # [16,10]
    loss = nn.CrossEntropyLoss()(logits, target)      # mean reduction, shape []
    loss.backward()
    # grad.<k> = model.<k>.grad   (same shapes as init.<k>)

Optimizer trajectories (``<name>.step3.<k>``, ``<name>.losses``)
---------------------------------------------------------------
Each starts from a fresh copy of the initial params::

    m = SimpleNN(); m.load_state_dict(init_state_dict)
    opt = <ctor>(m.parameters(), ...)     # see table; foreach=False everywhere
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(m(x), target)
        losses.append(loss.item())        # loss BEFORE this step's update
        loss.backward()
        opt.step()
    # <name>.step3.<k> = m.state_dict()[k] after the 3rd step
    # <name>.losses    = torch.tensor(losses, dtype=torch.float32)   # [3]

    sgd_momentum     optim.SGD(params, lr=0.01, momentum=0.9, foreach=False)
    sgd_nesterov_wd  optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                               weight_decay=1e-2, foreach=False)
    sgd_dampening    optim.SGD(params, lr=0.05, momentum=0.5, dampening=0.3,
                               weight_decay=1e-3, foreach=False)
    sgd_plain        optim.SGD(params, lr=0.01, foreach=False)
    adam             optim.Adam(params, lr=1e-3, foreach=False)
    adam_wd_amsgrad  optim.Adam(params, lr=1e-3, betas=(0.8, 0.99), eps=1e-6,
                                weight_decay=1e-2, amsgrad=True, foreach=False)
                     (lr 1e-3, not 1e-2: at 1e-2 PyTorch's own float32 and float64
                     runs of this config differ by up to 8.7e-6 after 3 steps, more
                     than the 1e-5 rel / 1e-6 abs tolerance the parity tests use)
    adamw            optim.AdamW(params, lr=1e-3, weight_decay=1e-2,
                                 foreach=False)

Cross-entropy with huge logits (``ce_big.*``, float32)
-----------------------------------------------------
::

    logits = torch.tensor([
        [ 1e4,  0.0,  -1e4, 1e4 - 1, 5.0],   # target 0: loss ~ log(1+e^-1)
        [-1e4,  1e4,   1e4, 1e4,     1e4],   # target 0: loss ~ 2e4 + log 4
        [ 1e4,  1e4,   1e4, 1e4,     1e4],   # target 2: loss = log 5
        [ 0.0,  1e4-1, 1e4, -1e4,    1.0],   # target 1: loss ~ log(1+e)
    ], dtype=torch.float32, requires_grad=True)
    target = torch.tensor([0, 0, 2, 1])                 # int64
    loss = nn.CrossEntropyLoss()(logits, target)        # mean, shape []
    loss.backward()
    # ce_big.grad = logits.grad  [4,5]

Cross-entropy float64 (``ce_f64.*``)
-----------------------------------
::

    torch.manual_seed(1)
    logits = (torch.randn(6, 7, dtype=torch.float64) * 3).requires_grad_()
    target = torch.randint(0, 7, (6,))                  # int64
    loss = nn.CrossEntropyLoss()(logits, target)        # float64, shape []
    loss.backward()
    # ce_f64.grad = logits.grad  [6,7] float64

Broadcast matmul (``bmm.*``, float64)
------------------------------------
::

    torch.manual_seed(2)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    out = torch.matmul(a, b)                            # [2,3,4,6]
    (out * w).sum().backward()
    # bmm.a, bmm.b, bmm.w, bmm.out, bmm.grad_a = a.grad [2,3,4,5],
    # bmm.grad_b = b.grad [3,5,6]

Elementwise broadcasting (``bc.*``, float64)
-------------------------------------------
::

    torch.manual_seed(3)
    a = torch.randn(4, 1, 3, dtype=torch.float64).requires_grad_()
    b = (torch.randn(5, 1, dtype=torch.float64) + 3).requires_grad_()
    # bc.b is stored ALREADY shifted (+3), i.e. exactly the b used below
    add = a + b; mul = a * b; div = a / b               # all [4,5,3]
    ((a * b) + a / b).sum().backward()
    # bc.grad_a = a.grad [4,1,3], bc.grad_b = b.grad [5,1]

ReLU subgradient at 0 (``relu0.grad``, float32)
----------------------------------------------
::

    x = torch.tensor([-1., 0., 2.], requires_grad=True)
    torch.relu(x).sum().backward()
    # relu0.grad = x.grad  -> [0., 0., 1.]  (PyTorch uses 0 at x == 0)
"""

import os
import sys

import torch
import torch.nn as nn
import torch.optim as optim
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simple_nn import SimpleNN  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "crates", "nn", "tests", "fixtures", "simple_nn_parity.safetensors")


# name -> constructor taking the parameter iterable. foreach=False everywhere
# (the reference single-tensor for-loop implementations).
OPTIMIZERS = {
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.01, momentum=0.9, foreach=False),
    "sgd_nesterov_wd": lambda p: optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2, foreach=False
    ),
    "sgd_dampening": lambda p: optim.SGD(
        p, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=1e-3, foreach=False
    ),
    "sgd_plain": lambda p: optim.SGD(p, lr=0.01, foreach=False),
    "adam": lambda p: optim.Adam(p, lr=1e-3, foreach=False),
    "adam_wd_amsgrad": lambda p: optim.Adam(
        p, lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, amsgrad=True, foreach=False
    ),
    "adamw": lambda p: optim.AdamW(p, lr=1e-3, weight_decay=1e-2, foreach=False),
}


def t(x):
    """Detached, contiguous, non-shared copy suitable for save_file."""
    return x.detach().clone().contiguous()


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    out = {}

    # ---- model, input, target ------------------------------------------
    torch.manual_seed(0)
    model = SimpleNN()
    x = torch.randn(16, 784)
    target = torch.randint(0, 10, (16,))
    init_sd = {k: t(v) for k, v in model.state_dict().items()}
    for k, v in init_sd.items():
        out[f"init.{k}"] = v
    out["input"] = t(x)
    out["target"] = t(target)
    assert target.dtype == torch.int64

    # ---- forward / backward at the initial params ------------------------
    logits = model(x)
    loss = nn.CrossEntropyLoss()(logits, target)
    loss.backward()
    out["logits"] = t(logits)
    out["loss"] = t(loss)
    for k, p in model.named_parameters():
        out[f"grad.{k}"] = t(p.grad)

    # ---- optimizer trajectories -----------------------------------------
    for name, ctor in OPTIMIZERS.items():
        m = SimpleNN()
        m.load_state_dict(init_sd)
        opt = ctor(m.parameters())
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(m(x), target)
            losses.append(loss.item())
            loss.backward()
            opt.step()
        for k, v in m.state_dict().items():
            out[f"{name}.step3.{k}"] = t(v)
        out[f"{name}.losses"] = torch.tensor(losses, dtype=torch.float32)

    # ---- cross-entropy with huge logits (float32) ------------------------
    logits = torch.tensor(
        [
            [1e4, 0.0, -1e4, 1e4 - 1, 5.0],
            [-1e4, 1e4, 1e4, 1e4, 1e4],
            [1e4, 1e4, 1e4, 1e4, 1e4],
            [0.0, 1e4 - 1, 1e4, -1e4, 1.0],
        ],
        dtype=torch.float32,
        requires_grad=True,
    )
    target = torch.tensor([0, 0, 2, 1])
    loss = nn.CrossEntropyLoss()(logits, target)
    loss.backward()
    out["ce_big.logits"] = t(logits)
    out["ce_big.target"] = t(target)
    out["ce_big.loss"] = t(loss)
    out["ce_big.grad"] = t(logits.grad)

    # ---- cross-entropy float64 -------------------------------------------
    torch.manual_seed(1)
    logits = (torch.randn(6, 7, dtype=torch.float64) * 3).requires_grad_()
    target = torch.randint(0, 7, (6,))
    loss = nn.CrossEntropyLoss()(logits, target)
    loss.backward()
    out["ce_f64.logits"] = t(logits)
    out["ce_f64.target"] = t(target)
    out["ce_f64.loss"] = t(loss)
    out["ce_f64.grad"] = t(logits.grad)

    # ---- broadcast matmul (float64) --------------------------------------
    torch.manual_seed(2)
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    o = torch.matmul(a, b)
    (o * w).sum().backward()
    out["bmm.a"] = t(a)
    out["bmm.b"] = t(b)
    out["bmm.w"] = t(w)
    out["bmm.out"] = t(o)
    out["bmm.grad_a"] = t(a.grad)
    out["bmm.grad_b"] = t(b.grad)

    # ---- elementwise broadcasting (float64) ------------------------------
    torch.manual_seed(3)
    a = torch.randn(4, 1, 3, dtype=torch.float64).requires_grad_()
    b = (torch.randn(5, 1, dtype=torch.float64) + 3).requires_grad_()
    assert b.detach().abs().min() > 0.5, "bc.b too close to zero"
    out["bc.a"] = t(a)
    out["bc.b"] = t(b)
    out["bc.add"] = t(a + b)
    out["bc.mul"] = t(a * b)
    out["bc.div"] = t(a / b)
    ((a * b) + a / b).sum().backward()
    out["bc.grad_a"] = t(a.grad)
    out["bc.grad_b"] = t(b.grad)

    # ---- relu subgradient at 0 -------------------------------------------
    xr = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    torch.relu(xr).sum().backward()
    out["relu0.grad"] = t(xr.grad)

    # ---- write ------------------------------------------------------------
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    meta = {"torch_version": torch.__version__, "generator": "tools/make_fixtures.py"}
    save_file(out, OUT, metadata=meta)

    print(f"wrote {os.path.relpath(OUT, REPO)} ({os.path.getsize(OUT)} bytes), "
          f"{len(out)} tensors, torch {torch.__version__}")
    for k in sorted(out):
        v = out[k]
        extra = f" = {v.item():.9g}" if v.dim() == 0 else ""
        if k.endswith(".losses"):
            extra = " = " + ", ".join(f"{z:.9g}" for z in v.tolist())
        print(f"  {k:40s} {str(v.dtype).replace('torch.', ''):8s} {list(v.shape)}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
