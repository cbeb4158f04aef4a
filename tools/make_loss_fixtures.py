#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's LayerNorm and loss parity tests.

Writes ``crates/nn/tests/fixtures/loss_parity.safetensors`` (via
``safetensors.torch.save_file``) so the Rust tests (``crates/nn/tests/loss_parity.rs``)
need no PyTorch at test time.  Regenerate with::

    python3 tools/make_loss_fixtures.py

Global settings (applied before anything else)::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

All tensors are float32 unless a group says float64; targets of class losses are int64.
Every backward uses a fixed random upstream gradient (``y.backward(gy)``), so that errors in
any output element show up in the gradients.  The safetensors metadata holds
``torch_version`` and ``generator``.  Dropout has no fixture: strata's masks come from its
own counter-based generator, not torch's.

The exact torch code behind every group of keys follows.

LayerNorm (groups ``ln_a``, ``ln_b``, ``ln_c``, ``ln_f64``)
-----------------------------------------------------------
::

    LNS = {
        # name:   (seed, ctor, input shape, dtype)
        "ln_a":   (40, lambda: nn.LayerNorm(6), (4, 6), torch.float32),
        "ln_b":   (41, lambda: nn.LayerNorm((3, 5), eps=1e-3), (2, 4, 3, 5), torch.float32),
        "ln_c":   (42, lambda: nn.LayerNorm(5, elementwise_affine=False), (3, 2, 5), torch.float32),
        "ln_f64": (43, lambda: nn.LayerNorm(7), (5, 7), torch.float64),
    }
    torch.manual_seed(seed)
    ln = ctor().to(dtype)
    if ln.elementwise_affine:
        with torch.no_grad():             # non-trivial affine parameters
            ln.weight.copy_(torch.randn(ln.weight.shape, dtype=dtype))
            ln.bias.copy_(torch.randn(ln.bias.shape, dtype=dtype))
    # <name>.weight, <name>.bias = ln.state_dict()   (when affine)
    x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
    y = ln(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    # <name>.x, <name>.y, <name>.gy, <name>.grad.x, <name>.grad.weight, <name>.grad.bias

Losses (groups ``mse``, ``bce``, ``bce_pw``, ``bce_big``, ``nll``, ``nll_w``, ``nll_w_ign``,
``ce_ls``, ``ce_w``, ``ce_w_ls``, ``ce_w_ls_ign``, ``ce_big_w_ls``)
--------------------------------------------------------------------------------------------
Inputs (each group draws after ``torch.manual_seed(seed)``)::

    def regression(seed):                  # mse, bce, bce_pw
        torch.manual_seed(seed)
        x = torch.randn(4, 5) * 3
        y = torch.rand(4, 5)               # soft targets in [0, 1)
        return x, y
    def big_binary(seed):                  # bce_big
        torch.manual_seed(seed)
        x = torch.tensor([[1e4, -1e4, 0.0, 20.0, -30.0], [-1e4, 1e4, 1e4, -1e4, 3.0]])
        y = torch.tensor([[1.0, 1.0, 0.5, 0.0, 1.0], [0.0, 0.25, 1.0, 1.0, 0.0]])
        return x, y
    def classes(seed, log_probs):          # nll*, ce*
        torch.manual_seed(seed)
        x = torch.randn(6, 5) * 2
        if log_probs:
            x = F.log_softmax(x, dim=1)
        target = torch.randint(0, 5, (6,))
        return x, target
    def big_classes(seed):                 # ce_big_w_ls
        x = torch.tensor([[1e4, 0.0, -1e4, 1e4 - 1, 5.0],
                          [-1e4, 1e4, 1e4, 1e4, 1e4],
                          [0.0, 0.0, 0.0, 0.0, -1e4],
                          [-1e4, -1e4, -1e4, 1e4, 0.5]])
        target = torch.tensor([0, 0, 4, 3])
        return x, target
    weight = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])    # class weights
    pos_weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])

    LOSSES = {
        # name:        (inputs, loss(x, target, reduction))
        "mse":         (regression(50),     lambda x, t, r: F.mse_loss(x, t, reduction=r)),
        "bce":         (regression(51),     lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, reduction=r)),
        "bce_pw":      (regression(52),     lambda x, t, r: F.binary_cross_entropy_with_logits(
                                                x, t, pos_weight=pos_weight, reduction=r)),
        "bce_big":     (big_binary(53),     lambda x, t, r: F.binary_cross_entropy_with_logits(
                                                x, t, pos_weight=pos_weight, reduction=r)),
        "nll":         (classes(54, True),  lambda x, t, r: F.nll_loss(x, t, reduction=r)),
        "nll_w":       (classes(55, True),  lambda x, t, r: F.nll_loss(x, t, weight=weight, reduction=r)),
        "nll_w_ign":   (classes(56, True),  lambda x, t, r: F.nll_loss(x, t, weight=weight, ignore_index=-100,
                                                                     reduction=r)),          # target[2] = -100
        "ce_ls":       (classes(57, False), lambda x, t, r: F.cross_entropy(x, t, label_smoothing=0.1, reduction=r)),
        "ce_w":        (classes(58, False), lambda x, t, r: F.cross_entropy(x, t, weight=weight, reduction=r)),
        "ce_w_ls":     (classes(59, False), lambda x, t, r: F.cross_entropy(x, t, weight=weight,
                                                                          label_smoothing=0.2, reduction=r)),
        "ce_w_ls_ign": (classes(60, False), lambda x, t, r: F.cross_entropy(x, t, weight=weight, ignore_index=-100,
                                                                          label_smoothing=0.3, reduction=r)),
                                                                                             # target[2] = -100
        "ce_big_w_ls": (big_classes(61),    lambda x, t, r: F.cross_entropy(x, t, weight=weight,
                                                                          label_smoothing=0.1, reduction=r)),
    }
    # <name>.x, <name>.target (after the -100 where marked)
    for k, r in enumerate(["none", "mean", "sum"]):
        x = x.detach().clone().requires_grad_()
        loss = loss_fn(x, target, r)
        gl = torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed + 1000 * k))
        loss.backward(gl)
        # <name>.<r>.loss = loss, <name>.<r>.gl = gl, <name>.<r>.grad.x = x.grad
"""

import os

import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "nn", "tests", "fixtures", "loss_parity.safetensors")

LNS = {
    "ln_a": (40, lambda: nn.LayerNorm(6), (4, 6), torch.float32),
    "ln_b": (41, lambda: nn.LayerNorm((3, 5), eps=1e-3), (2, 4, 3, 5), torch.float32),
    "ln_c": (42, lambda: nn.LayerNorm(5, elementwise_affine=False), (3, 2, 5), torch.float32),
    "ln_f64": (43, lambda: nn.LayerNorm(7), (5, 7), torch.float64),
}


def regression(seed):
    torch.manual_seed(seed)
    x = torch.randn(4, 5) * 3
    y = torch.rand(4, 5)
    return x, y


def big_binary(seed):
    torch.manual_seed(seed)
    x = torch.tensor([[1e4, -1e4, 0.0, 20.0, -30.0], [-1e4, 1e4, 1e4, -1e4, 3.0]])
    y = torch.tensor([[1.0, 1.0, 0.5, 0.0, 1.0], [0.0, 0.25, 1.0, 1.0, 0.0]])
    return x, y


def classes(seed, log_probs):
    torch.manual_seed(seed)
    x = torch.randn(6, 5) * 2
    if log_probs:
        x = F.log_softmax(x, dim=1)
    target = torch.randint(0, 5, (6,))
    return x, target


def big_classes(seed):
    x = torch.tensor(
        [
            [1e4, 0.0, -1e4, 1e4 - 1, 5.0],
            [-1e4, 1e4, 1e4, 1e4, 1e4],
            [0.0, 0.0, 0.0, 0.0, -1e4],
            [-1e4, -1e4, -1e4, 1e4, 0.5],
        ]
    )
    target = torch.tensor([0, 0, 4, 3])
    return x, target


WEIGHT = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])
POS_WEIGHT = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])


def losses():
    w, pw = WEIGHT, POS_WEIGHT

    def ignoring(inputs):
        x, target = inputs
        target = target.clone()
        target[2] = -100
        return x, target

    return {
        "mse": (50, regression(50), lambda x, t, r: F.mse_loss(x, t, reduction=r)),
        "bce": (51, regression(51), lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, reduction=r)),
        "bce_pw": (
            52,
            regression(52),
            lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=r),
        ),
        "bce_big": (
            53,
            big_binary(53),
            lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=r),
        ),
        "nll": (54, classes(54, True), lambda x, t, r: F.nll_loss(x, t, reduction=r)),
        "nll_w": (55, classes(55, True), lambda x, t, r: F.nll_loss(x, t, weight=w, reduction=r)),
        "nll_w_ign": (
            56,
            ignoring(classes(56, True)),
            lambda x, t, r: F.nll_loss(x, t, weight=w, ignore_index=-100, reduction=r),
        ),
        "ce_ls": (57, classes(57, False), lambda x, t, r: F.cross_entropy(x, t, label_smoothing=0.1, reduction=r)),
        "ce_w": (58, classes(58, False), lambda x, t, r: F.cross_entropy(x, t, weight=w, reduction=r)),
        "ce_w_ls": (
            59,
            classes(59, False),
            lambda x, t, r: F.cross_entropy(x, t, weight=w, label_smoothing=0.2, reduction=r),
        ),
        "ce_w_ls_ign": (
            60,
            ignoring(classes(60, False)),
            lambda x, t, r: F.cross_entropy(x, t, weight=w, ignore_index=-100, label_smoothing=0.3, reduction=r),
        ),
        "ce_big_w_ls": (
            61,
            big_classes(61),
            lambda x, t, r: F.cross_entropy(x, t, weight=w, label_smoothing=0.1, reduction=r),
        ),
    }


def t(v):
    """A standalone contiguous copy, as safetensors wants."""
    return v.detach().clone().contiguous()


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    out = {"weight": t(WEIGHT), "pos_weight": t(POS_WEIGHT)}

    for name, (seed, ctor, shape, dtype) in LNS.items():
        torch.manual_seed(seed)
        ln = ctor().to(dtype)
        if ln.elementwise_affine:
            with torch.no_grad():
                ln.weight.copy_(torch.randn(ln.weight.shape, dtype=dtype))
                ln.bias.copy_(torch.randn(ln.bias.shape, dtype=dtype))
        for k, v in ln.state_dict().items():
            out[f"{name}.{k}"] = t(v)
        x = (torch.randn(*shape, dtype=dtype) * 2 + 1).requires_grad_()
        y = ln(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        out[f"{name}.x"], out[f"{name}.y"], out[f"{name}.gy"] = t(x), t(y), t(gy)
        out[f"{name}.grad.x"] = t(x.grad)
        if ln.elementwise_affine:
            out[f"{name}.grad.weight"] = t(ln.weight.grad)
            out[f"{name}.grad.bias"] = t(ln.bias.grad)

    for name, (seed, (x0, target), loss_fn) in losses().items():
        out[f"{name}.x"], out[f"{name}.target"] = t(x0), t(target)
        for k, r in enumerate(["none", "mean", "sum"]):
            x = x0.detach().clone().requires_grad_()
            loss = loss_fn(x, target, r)
            g = torch.Generator().manual_seed(seed + 1000 * k)
            gl = torch.randn(loss.shape, generator=g)
            loss.backward(gl)
            assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all(), name
            out[f"{name}.{r}.loss"], out[f"{name}.{r}.gl"] = t(loss), t(gl)
            out[f"{name}.{r}.grad.x"] = t(x.grad)

    metadata = {"torch_version": torch.__version__, "generator": "tools/make_loss_fixtures.py"}
    safetensors.torch.save_file(out, OUT, metadata=metadata)
    print(f"wrote {os.path.normpath(OUT)}: {len(out)} tensors (torch {torch.__version__}, safetensors {safetensors.__version__})")
    for k in sorted(out):
        print(f"  {k:32s} {str(out[k].dtype):14s} {list(out[k].shape)}")


if __name__ == "__main__":
    main()
