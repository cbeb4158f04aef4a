#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's ``GroupNorm`` layer (``nn.GroupNorm``).

Writes ``crates/nn/tests/fixtures/group_norm_parity.safetensors`` (via
``safetensors.torch.save_file``), read by ``crates/nn/tests/group_norm_parity.rs`` so the Rust
tests need no PyTorch.  Regenerate with::

    python3 tools/make_group_norm_fixtures.py

(torch 2.x, numpy, safetensors; the output is deterministic: one thread, fixed seeds.)
The safetensors metadata holds ``torch_version`` and ``generator``.

Global settings (applied before anything else)::

    torch.set_num_threads(1)

Cases (``<name>.*`` keys)
-------------------------
Every case in ``CASES`` below, ``(name, num_groups, num_channels, input shape, affine, eps)``,
in float32 and, separately, in float64 (names end in ``_f32`` / ``_f64``)::

    torch.manual_seed(seed)                   # seed = 2000 + the case's index in CASES
    gn = nn.GroupNorm(num_groups, num_channels, eps=eps, affine=affine).to(dtype)
    if affine:                                # away from the ones/zeros init, so the
        with torch.no_grad():                 # affine gradients are tested too
            gn.weight.copy_(1 + 0.5 * torch.randn(num_channels, dtype=dtype))
            gn.bias.copy_(torch.randn(num_channels, dtype=dtype))
    x = (2 * torch.randn(*shape, dtype=dtype) + 0.5).requires_grad_()
    y = gn(x)
    gy = torch.randn(*y.shape, dtype=dtype)
    y.backward(gy)
    # <name>.x, <name>.y, <name>.gy, <name>.grad_x = x.grad
    # when affine: <name>.weight, <name>.bias, <name>.grad_weight, <name>.grad_bias
    # <name>.config = int64 [num_groups, num_channels, affine]
    # <name>.eps = float64 [eps]

and for the float32 cases, the same forward and backward in float64 from the float32 case's
own tensors (``x``, ``gy``, ``weight``, ``bias`` converted exactly), the reference both
float32 results are measured against::

    # <name>.exact.y, <name>.exact.grad_x (, <name>.exact.grad_weight, <name>.exact.grad_bias)

The cases cover one group (LayerNorm over each sample), two groups, one group per channel
(InstanceNorm), affine on and off, ``[N, C]``, ``[N, C, L]``, ``[N, C, H, W]`` and
``[N, C, D, H, W]`` inputs, and non-default eps (a large one, where it matters). Every group
holds four values or more: over two, the output is ±1 whatever the input and the input gradient
is all cancellation, where PyTorch's own float32 result is 1e-6 from the exact one (strata's,
with its statistics in float64, is not), beyond the float32 tolerance.
"""

import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.set_num_threads(1)

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests", "fixtures",
    "group_norm_parity.safetensors",
)

# (name, num_groups, num_channels, input shape, affine, eps)
CASES = [
    ("g1_c4_l", 1, 4, (3, 4, 5), True, 1e-5),
    ("g2_c6_hw", 2, 6, (2, 6, 3, 4), True, 1e-5),
    ("g6_c6_hw", 6, 6, (2, 6, 3, 3), True, 1e-5),
    ("g3_c6_l_noaffine", 3, 6, (2, 6, 7), False, 1e-5),
    ("g4_c8_hw_eps", 4, 8, (2, 8, 4, 4), True, 1e-2),
    ("g2_c8_nc", 2, 8, (5, 8), True, 1e-5),
    ("g2_c4_dhw", 2, 4, (2, 4, 2, 3, 2), True, 1e-5),
    ("g1_c3_hw_noaffine_eps", 1, 3, (2, 3, 5, 5), False, 0.5),
    ("g4_c4_l_noaffine", 4, 4, (3, 4, 6), False, 1e-5),
    ("g8_c32_hw", 8, 32, (2, 32, 6, 6), True, 1e-5),
]


def main():
    tensors = {}
    for index, (name, groups, channels, shape, affine, eps) in enumerate(CASES):
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            torch.manual_seed(2000 + index)
            gn = nn.GroupNorm(groups, channels, eps=eps, affine=affine).to(dtype)
            if affine:
                with torch.no_grad():
                    gn.weight.copy_(1 + 0.5 * torch.randn(channels, dtype=dtype))
                    gn.bias.copy_(torch.randn(channels, dtype=dtype))
            x = (2 * torch.randn(*shape, dtype=dtype) + 0.5).requires_grad_()
            y = gn(x)
            gy = torch.randn(*y.shape, dtype=dtype)
            y.backward(gy)
            key = f"{name}_{suffix}"
            tensors[f"{key}.x"] = x.detach().clone()
            tensors[f"{key}.y"] = y.detach().clone()
            tensors[f"{key}.gy"] = gy
            tensors[f"{key}.grad_x"] = x.grad.detach().clone()
            if affine:
                tensors[f"{key}.weight"] = gn.weight.detach().clone()
                tensors[f"{key}.bias"] = gn.bias.detach().clone()
                tensors[f"{key}.grad_weight"] = gn.weight.grad.detach().clone()
                tensors[f"{key}.grad_bias"] = gn.bias.grad.detach().clone()
            tensors[f"{key}.config"] = torch.tensor([groups, channels, int(affine)], dtype=torch.int64)
            tensors[f"{key}.eps"] = torch.tensor([eps], dtype=torch.float64)
            if dtype == torch.float32:
                exact = nn.GroupNorm(groups, channels, eps=eps, affine=affine).double()
                if affine:
                    with torch.no_grad():
                        exact.weight.copy_(gn.weight.double())
                        exact.bias.copy_(gn.bias.double())
                x64 = x.detach().double().requires_grad_()
                y64 = exact(x64)
                y64.backward(gy.double())
                tensors[f"{key}.exact.y"] = y64.detach().clone()
                tensors[f"{key}.exact.grad_x"] = x64.grad.detach().clone()
                if affine:
                    tensors[f"{key}.exact.grad_weight"] = exact.weight.grad.detach().clone()
                    tensors[f"{key}.exact.grad_bias"] = exact.bias.grad.detach().clone()
    meta = {"torch_version": torch.__version__, "generator": "tools/make_group_norm_fixtures.py"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    n = sum(1 for k in tensors if k.endswith(".config"))
    print(f"wrote {os.path.normpath(OUT)}: {n} cases ({len(CASES)} configurations × f32, f64)")


if __name__ == "__main__":
    main()
