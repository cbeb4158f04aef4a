#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's initialisation schemes (``torch.nn.init``).

Writes ``crates/nn/tests/fixtures/init_parity.safetensors``, read by
``crates/nn/tests/init_parity.rs``, so the Rust tests need no PyTorch. Regenerate with::

    python3 tools/make_init_fixtures.py

It runs with ``torch.set_num_threads(1)``; every value is a pure function of the code below
(the orthogonal cases seed ``torch.manual_seed(i)``). The safetensors metadata holds
``torch_version``, ``generator`` and the case descriptions named below.

Fans (keys ``fan.<i>.shape``, ``fan.<i>.fans``, metadata ``fan.<i>.module``)
---------------------------------------------------------------------------
For the weights of real modules (``FAN_MODULES``: Linear, Conv1d/2d/3d with and without
``groups``, LSTM and GRU weights, Embedding)::

    w = eval(module)                                   # e.g. nn.Conv2d(32, 64, 3, groups=4).weight
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
    # fan.<i>.shape = list(w.shape) (int64), fan.<i>.fans = [fan_in, fan_out] (int64)

and ``fan_error.<i>.shape`` for 1-D tensors (biases), where torch raises ``ValueError``.

Gains (key ``gain``, metadata ``gain.cases``)
---------------------------------------------
``gain[k] = torch.nn.init.calculate_gain(name, param)`` (float64) for every case of
``gain.cases`` (comma-separated ``name`` or ``name:param``): every nonlinearity, and
leaky_relu with several slopes.

Draws (keys ``draw.<i>.shape``, ``draw.<i>.args``, metadata ``draw.<i>.init``, ``draw.<i>.call``)
-------------------------------------------------------------------------------------------------
What each scheme of ``DRAW_CASES`` asks the tensor for, recorded by wrapping
``torch.Tensor.uniform_``, ``normal_``, ``fill_`` and ``zero_`` (the first call is kept)::

    t = torch.empty(shape, dtype=torch.float64)
    getattr(torch.nn.init, scheme + "_")(t, **kwargs)
    # draw.<i>.call = "uniform" (args = [from, to]), "normal" ([mean, std]), "fill" ([val, 0])
    #                 or "zero" ([0, 0]); draw.<i>.init = the scheme as a model-file value,
    #                 every kwarg written out, e.g. { scheme = "kaiming_normal", a = 0,
    #                 mode = "fan_out", nonlinearity = "relu" }

So the bounds and standard deviations are torch's own (fans, gain, ``math.sqrt(3)``), and for
``trunc_normal`` the call shows which of torch 2.15's two rejection samplers it took (normal
draws when ``[a, b]`` holds more than 30% of the mass, uniform proposals on ``[a, b]`` else).

Orthogonal (keys ``orth.<i>.normal``, ``orth.<i>.out``, ``orth.<i>.gain``)
--------------------------------------------------------------------------
For each ``(shape, gain)`` of ``ORTH_CASES``, float64::

    torch.manual_seed(i)
    t = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(t, gain)
    # orth.<i>.normal = the [rows, cols] normal draws orthogonal_ made (recorded from normal_),
    # orth.<i>.out = t
"""

import os

import safetensors
import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "nn", "tests", "fixtures", "init_parity.safetensors")

FAN_MODULES = [
    "nn.Linear(784, 128).weight",
    "nn.Linear(3, 10).weight",
    "nn.Conv2d(3, 64, 7).weight",
    "nn.Conv2d(32, 64, 3, groups=4).weight",
    "nn.Conv2d(16, 16, 5, groups=16).weight",
    "nn.Conv2d(6, 12, (3, 5), groups=3).weight",
    "nn.Conv1d(4, 6, 3).weight",
    "nn.Conv3d(2, 3, (4, 5, 6)).weight",
    "nn.LSTM(20, 32).weight_ih_l0",
    "nn.LSTM(20, 32).weight_hh_l0",
    "nn.GRU(7, 5, num_layers=2, bidirectional=True).weight_ih_l1_reverse",
    "nn.Embedding(1000, 64).weight",
]
FAN_ERRORS = ["nn.Linear(3, 10).bias", "nn.BatchNorm2d(8).weight"]

NONLINEARITIES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
LEAKY_PARAMS = [0, 0.01, 0.2, 1, 3.5, -0.3, 2.23606797749979]

# (scheme, kwargs, shape)
DRAW_CASES = [
    ("uniform", {}, (5, 7)),
    ("uniform", {"a": -0.3, "b": 0.7}, (10,)),
    ("normal", {}, (4, 4)),
    ("normal", {"mean": 0.5, "std": 0.02}, (3,)),
    ("trunc_normal", {"std": 0.02}, (64, 32)),
    ("trunc_normal", {"mean": 1.0, "std": 2.0, "a": -1.0, "b": 4.0}, (16,)),
    ("trunc_normal", {"a": 2.0, "b": 3.0}, (8, 8)),
    ("trunc_normal", {"mean": 0.0, "std": 1.0, "a": -0.2, "b": 0.3}, (8,)),
    ("constant", {"val": 0.25}, (6,)),
    ("zeros", {}, (6,)),
    ("ones", {}, (2, 3)),
    ("xavier_uniform", {}, (128, 784)),
    ("xavier_uniform", {"gain": 1.4142135623730951}, (64, 3, 7, 7)),
    ("xavier_normal", {}, (10, 20)),
    ("xavier_normal", {"gain": 1.6666666666666667}, (64, 8, 3, 3)),
    ("kaiming_uniform", {}, (64, 3, 7, 7)),
    ("kaiming_uniform", {"a": 2.23606797749979}, (128, 784)),
    ("kaiming_uniform", {"a": 0, "mode": "fan_out", "nonlinearity": "relu"}, (64, 8, 3, 3)),
    ("kaiming_uniform", {"mode": "fan_in", "nonlinearity": "linear"}, (128, 32)),
    ("kaiming_normal", {}, (128, 784)),
    ("kaiming_normal", {"mode": "fan_out", "nonlinearity": "relu"}, (64, 8, 3, 3)),
    ("kaiming_normal", {"a": 0.2, "mode": "fan_out", "nonlinearity": "leaky_relu"}, (16, 1, 5, 5)),
    ("kaiming_normal", {"nonlinearity": "tanh"}, (6, 4, 3)),
    ("kaiming_normal", {"nonlinearity": "selu", "mode": "fan_out"}, (3, 2, 4, 5, 6)),
    ("kaiming_normal", {"nonlinearity": "sigmoid"}, (1000, 64)),
]

ORTH_CASES = [((6, 4), 1.0), ((4, 6), 1.0), ((5, 5), 1.0), ((8, 2, 3), 2.5), ((3, 2, 2, 2), 1.0),
              ((1, 5), 1.0), ((5, 1), 0.5), ((64, 16), 1.0), ((12, 48), 1.4142135623730951)]


def toml_value(v):
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def model_file_init(scheme, kwargs):
    if not kwargs:
        return f'"{scheme}"'
    params = ", ".join(f"{k} = {toml_value(v)}" for k, v in kwargs.items())
    return f'{{ scheme = "{scheme}", {params} }}'


class Recorder:
    """Wraps the tensor methods torch.nn.init draws through; keeps every call."""

    METHODS = ["uniform_", "normal_", "fill_", "zero_"]

    def __enter__(self):
        self.calls = []
        self.saved = {m: getattr(torch.Tensor, m) for m in self.METHODS}
        for m in self.METHODS:
            setattr(torch.Tensor, m, self.wrap(m, self.saved[m]))
        return self

    def wrap(self, name, original):
        def method(t, *args, **kwargs):
            out = original(t, *args, **kwargs)
            self.calls.append((name, args, kwargs, out.detach().clone()))
            return out
        return method

    def __exit__(self, *exc):
        for m, f in self.saved.items():
            setattr(torch.Tensor, m, f)


def fans(t, meta):
    for i, expr in enumerate(FAN_MODULES):
        w = eval(expr)
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
        t[f"fan.{i}.shape"] = torch.tensor(list(w.shape), dtype=torch.int64)
        t[f"fan.{i}.fans"] = torch.tensor([fan_in, fan_out], dtype=torch.int64)
        meta[f"fan.{i}.module"] = expr
    for i, expr in enumerate(FAN_ERRORS):
        w = eval(expr)
        try:
            torch.nn.init._calculate_fan_in_and_fan_out(w)
            raise SystemExit(f"{expr}: torch computed fans for a 1-D tensor")
        except ValueError:
            t[f"fan_error.{i}.shape"] = torch.tensor(list(w.shape), dtype=torch.int64)


def gains(t, meta):
    cases, values = [], []
    for n in NONLINEARITIES:
        cases.append(n)
        values.append(torch.nn.init.calculate_gain(n))
    for p in LEAKY_PARAMS:
        cases.append(f"leaky_relu:{p!r}")
        values.append(torch.nn.init.calculate_gain("leaky_relu", p))
    meta["gain.cases"] = ",".join(cases)
    t["gain"] = torch.tensor(values, dtype=torch.float64)


def draws(t, meta):
    for i, (scheme, kwargs, shape) in enumerate(DRAW_CASES):
        x = torch.empty(shape, dtype=torch.float64)
        with Recorder() as r:
            getattr(torch.nn.init, scheme + "_")(x, **kwargs)
        name, args, kw, _ = r.calls[0]
        if name == "uniform_":
            call, values = "uniform", [args[0] if args else kw.get("from", 0.0), args[1] if len(args) > 1 else kw.get("to", 1.0)]
        elif name == "normal_":
            call, values = "normal", [args[0] if args else kw.get("mean", 0.0), args[1] if len(args) > 1 else kw.get("std", 1.0)]
        elif name == "fill_":
            call, values = "fill", [float(args[0]), 0.0]
        else:
            call, values = "zero", [0.0, 0.0]
        meta[f"draw.{i}.init"] = model_file_init(scheme, kwargs)
        meta[f"draw.{i}.call"] = call
        t[f"draw.{i}.shape"] = torch.tensor(list(shape), dtype=torch.int64)
        t[f"draw.{i}.args"] = torch.tensor([float(v) for v in values], dtype=torch.float64)


def orthogonal(t):
    for i, (shape, gain) in enumerate(ORTH_CASES):
        torch.manual_seed(i)
        x = torch.empty(shape, dtype=torch.float64)
        with Recorder() as r:
            torch.nn.init.orthogonal_(x, gain)
        normal = [c for c in r.calls if c[0] == "normal_"]
        assert len(normal) == 1, normal
        t[f"orth.{i}.normal"] = normal[0][3]
        t[f"orth.{i}.out"] = x.clone()
        t[f"orth.{i}.gain"] = torch.tensor([gain], dtype=torch.float64)


def main():
    torch.set_num_threads(1)
    t, meta = {}, {}
    fans(t, meta)
    gains(t, meta)
    draws(t, meta)
    orthogonal(t)
    t = {k: v.contiguous() for k, v in t.items()}
    meta.update({"torch_version": torch.__version__, "generator": "tools/make_init_fixtures.py"})
    save_file(t, OUT, metadata=meta)
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(t)} tensors (torch {torch.__version__}, "
          f"safetensors {safetensors.__version__})")
    for k in sorted(meta):
        if k.endswith(".init") or k.endswith(".call") or k == "gain.cases":
            print(f"  {k}: {meta[k]}")


if __name__ == "__main__":
    main()
