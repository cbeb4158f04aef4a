#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's RMSprop and Adagrad parity tests.

Writes ``crates/nn/tests/fixtures/optim_parity.safetensors`` (via
``safetensors.torch.save_file``) so the Rust test (``crates/nn/tests/optim_parity.rs``) needs
no PyTorch at test time.  Regenerate with::

    python3 tools/make_optim_fixtures.py

Global settings (applied before anything else)::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

The safetensors metadata holds ``torch_version`` and ``generator``.  The exact torch code behind
every key follows.

Parameters and gradients (keys ``{dtype}.init.{i}``, ``{dtype}.grad.{k}.{i}``)
-----------------------------------------------------------------------------
For each dtype in float64 (``f64``) and float32 (``f32``), three parameter tensors and a fixed
gradient for each of ``STEPS`` = 5 steps::

    SHAPES = [(3, 4), (5,), (2, 3, 2)]
    g = torch.Generator().manual_seed(7)
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    scale = [1.0, 0.01, 30.0]           # small and large gradients (eps and the average matter)
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) * c for s, c in zip(SHAPES, scale)]
             for _ in range(STEPS)]
    # cast to the dtype (the f32 values are the f64 draws rounded)
    # parameter 1 has no gradient on step 2 (k = 1): it is skipped there, so its step count
    # (Adagrad's lr decay) differs from the others'; the key grad.1.1 is absent

Runs (keys ``{case}.{dtype}.step.{k}.{i}``, ``{case}.{dtype}.state.{name}.{i}``)
--------------------------------------------------------------------------------
::

    params = [p.clone().requires_grad_() for p in init]
    opt = OPTIMIZER(params, **options, foreach=False)
    for k in range(STEPS):
        for i, p in enumerate(params):
            p.grad = grads[k][i].clone() if (k, i) != (1, 1) else None
        opt.step()
        # {case}.{dtype}.step.{k}.{i} = params[i] after step k
    # {case}.{dtype}.state.{name}.{i} = opt.state_dict()["state"][i][name] after the last step
    # ("step" as float64; square_avg, momentum_buffer, grad_avg, sum)

with::

    CASES = {
        "rmsprop":            (torch.optim.RMSprop, {}),
        "rmsprop_centered":   (torch.optim.RMSprop, {"centered": True}),
        "rmsprop_momentum":   (torch.optim.RMSprop, {"momentum": 0.9}),
        "rmsprop_wd":         (torch.optim.RMSprop, {"weight_decay": 0.1, "lr": 0.05}),
        "rmsprop_all":        (torch.optim.RMSprop, {"lr": 0.03, "alpha": 0.9, "eps": 1e-6,
                                                     "weight_decay": 0.05, "momentum": 0.5,
                                                     "centered": True}),
        "rmsprop_low_alpha":  (torch.optim.RMSprop, {"alpha": 0.3, "centered": True}),  # lerp, weight ≥ 0.5
        "adagrad":            (torch.optim.Adagrad, {}),
        "adagrad_lr_decay":   (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.3}),
        "adagrad_init":       (torch.optim.Adagrad, {"initial_accumulator_value": 0.5}),
        "adagrad_wd":         (torch.optim.Adagrad, {"weight_decay": 0.1}),
        "adagrad_all":        (torch.optim.Adagrad, {"lr": 0.2, "lr_decay": 0.05, "weight_decay": 0.02,
                                                     "initial_accumulator_value": 0.1, "eps": 1e-6}),
    }
"""

import os

import safetensors
import safetensors.torch
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "nn", "tests", "fixtures", "optim_parity.safetensors")

STEPS = 5
SHAPES = [(3, 4), (5,), (2, 3, 2)]
SKIPPED = (1, 1)  # (step, parameter) without a gradient

CASES = {
    "rmsprop": (torch.optim.RMSprop, {}),
    "rmsprop_centered": (torch.optim.RMSprop, {"centered": True}),
    "rmsprop_momentum": (torch.optim.RMSprop, {"momentum": 0.9}),
    "rmsprop_wd": (torch.optim.RMSprop, {"weight_decay": 0.1, "lr": 0.05}),
    "rmsprop_all": (
        torch.optim.RMSprop,
        {"lr": 0.03, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.5, "centered": True},
    ),
    "rmsprop_low_alpha": (torch.optim.RMSprop, {"alpha": 0.3, "centered": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adagrad_lr_decay": (torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.3}),
    "adagrad_init": (torch.optim.Adagrad, {"initial_accumulator_value": 0.5}),
    "adagrad_wd": (torch.optim.Adagrad, {"weight_decay": 0.1}),
    "adagrad_all": (
        torch.optim.Adagrad,
        {"lr": 0.2, "lr_decay": 0.05, "weight_decay": 0.02, "initial_accumulator_value": 0.1, "eps": 1e-6},
    ),
}


def t(v):
    """A standalone contiguous copy, as safetensors wants."""
    return v.detach().clone().contiguous()


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(7)
    init64 = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    scale = [1.0, 0.01, 30.0]
    grads64 = [
        [torch.randn(s, generator=g, dtype=torch.float64) * c for s, c in zip(SHAPES, scale)] for _ in range(STEPS)
    ]
    out = {}
    for dname, dtype in [("f64", torch.float64), ("f32", torch.float32)]:
        init = [p.to(dtype) for p in init64]
        grads = [[x.to(dtype) for x in step] for step in grads64]
        for i, p in enumerate(init):
            out[f"{dname}.init.{i}"] = t(p)
        for k in range(STEPS):
            for i in range(len(SHAPES)):
                if (k, i) != SKIPPED:
                    out[f"{dname}.grad.{k}.{i}"] = t(grads[k][i])
        for case, (ctor, options) in CASES.items():
            params = [p.clone().requires_grad_() for p in init]
            opt = ctor(params, **options, foreach=False)
            for k in range(STEPS):
                for i, p in enumerate(params):
                    p.grad = grads[k][i].clone() if (k, i) != SKIPPED else None
                opt.step()
                for i, p in enumerate(params):
                    assert torch.isfinite(p).all(), (case, dname, k, i)
                    out[f"{case}.{dname}.step.{k}.{i}"] = t(p)
            for i, state in opt.state_dict()["state"].items():
                for name, v in state.items():
                    v = v.to(torch.float64) if name == "step" else v
                    out[f"{case}.{dname}.state.{name}.{i}"] = t(v)
    metadata = {"torch_version": torch.__version__, "generator": "tools/make_optim_fixtures.py"}
    safetensors.torch.save_file(out, OUT, metadata=metadata)
    print(
        f"wrote {os.path.normpath(OUT)}: {len(out)} tensors "
        f"(torch {torch.__version__}, safetensors {safetensors.__version__})"
    )
    for case in CASES:
        keys = sorted({k.split(".")[3] for k in out if k.startswith(f"{case}.f64.state.")})
        print(f"  {case:18s} {STEPS} steps, f64 and f32; state: {', '.join(keys)}")


if __name__ == "__main__":
    main()
