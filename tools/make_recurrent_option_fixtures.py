#!/usr/bin/env python3
"""PyTorch references for four options (issue 11, item 4): GELU's ``approximate='tanh'``,
``dropout`` between stacked RNN/LSTM/GRU layers, time-major recurrent models, and the key order
of ``state_dict()``.

Writes ``crates/nn/tests/fixtures/recurrent_option_parity.safetensors``, read by
``crates/nn/tests/option_parity.rs``. Regenerate with (torch 2.15, numpy, safetensors; ~5 s)::

    python3 tools/make_recurrent_option_fixtures.py

Everything runs with ``torch.set_num_threads(1)`` and ``torch.manual_seed(0)`` set once at the
start; the groups are drawn in the order below, so the file is the same on every run.

1. ``gelu_tanh.*`` (float32 and float64: ``gelu_tanh.f32.*``, ``gelu_tanh.f64.*``)::

       x = torch.cat([torch.linspace(-8, 8, 161), torch.randn(64) * 3]).to(dtype).requires_grad_()
       g = torch.randn_like(x)                      # the upstream gradient
       y = torch.nn.GELU(approximate='tanh')(x)     # also F.gelu(x, approximate='tanh')
       (y * g).sum().backward()                     # x.grad
       # stored: x, g, y, dx

2. ``rnn.<case>.*``: a stacked layer with ``dropout`` (seeds per case below)::

       layer = nn.LSTM(5, 7, num_layers=3, dropout=0.3, batch_first=True)         # case lstm_eval, f32
       layer = nn.GRU(5, 7, num_layers=2, dropout=0.0, bidirectional=True)         # case gru_train_p0, f64
       layer = nn.RNN(5, 7, num_layers=2, nonlinearity='relu', dropout=0.5)        # case rnn_eval, f64
       layer = nn.LSTM(5, 7, num_layers=2, dropout=0.0, bidirectional=True)        # case lstm_train_p0, f32
       layer.eval() for the *_eval cases, layer.train() for the *_p0 cases
       out, h_n[, c_n] = layer(x)                   # x: [3, 4, 5] (batch_first: [N, T, F])
       (out * g).sum().backward()
       # stored: init.<param> (the state_dict), x, g, out, h_n, c_n (LSTM), dx, grad.<param>

   Dropout's masks cannot match PyTorch's (another generator): in evaluation mode dropout is
   the identity and with p = 0 it is in training mode too, so these compare exactly what
   PyTorch computes; the masks themselves are tested structurally on the Rust side.

3. ``time_major.*``: a time-major classifier, batch at dimension 1, as the model file::

       input = [6, 5]
       layers = [
         { name = "lstm", type = "LSTM", input_size = 5, hidden_size = 8, num_layers = 2, dropout = 0.25 },
         { name = "last", type = "LastStep", batch_first = false },
         { name = "fc", type = "Linear", in_features = 8, out_features = 3 },
       ]

   is, in PyTorch (``LSTMOut`` returns the output sequence only; ``LastStep`` is ``x[-1]``)::

       model = nn.Sequential(OrderedDict(lstm=LSTMOut(5, 8, num_layers=2, dropout=0.25),
                                         last=LastStep(False), fc=nn.Linear(8, 3))).double().eval()
       x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)   # [T, N, F]
       logits = model(x); (logits * g).sum().backward()
       # stored: init.<key>, x, g, logits, dx (float64)

4. Metadata ``keys.<file>``: ``list(model.state_dict().keys())`` joined by ``,`` for every model
   file ``examples/*.toml`` (run files, which name a model, are skipped), the model built in
   PyTorch with the same module tree as strata's (``nn.Sequential`` children by name or
   position, ``Residual`` registering ``body`` then ``shortcut``, branches in an
   ``nn.ModuleList`` named ``branches``). Sizes left to inference are given 1: the keys do not
   depend on them. PyTorch lists each module's parameters then its buffers, recursively in
   registration order (``bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var,
   bn1.num_batches_tracked`` before the next module's keys).
"""

import glob
import os
import sys
import tomllib
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "nn", "tests", "fixtures", "recurrent_option_parity.safetensors")

# strata's Residual, Branches (Add/Concat), LastStep and the recurrent layers that return only
# their output sequence, shared with the random-model generator.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_random_models import Branches, GRUOut, LastStep, LSTMOut, Residual, RNNOut  # noqa: E402


def gelu_tanh(t, dtype):
    x = torch.cat([torch.linspace(-8, 8, 161), torch.randn(64) * 3]).to(dtype).requires_grad_()
    g = torch.randn_like(x)
    y = nn.GELU(approximate="tanh")(x)
    assert torch.equal(y, F.gelu(x, approximate="tanh"))
    (y * g).sum().backward()
    name = "f32" if dtype == torch.float32 else "f64"
    for k, v in (("x", x), ("g", g), ("y", y), ("dx", x.grad)):
        t[f"gelu_tanh.{name}.{k}"] = v.detach().clone()


RNN_CASES = [
    # name, constructor, dtype, train
    ("lstm_eval", lambda: nn.LSTM(5, 7, num_layers=3, dropout=0.3, batch_first=True), torch.float32, False),
    ("gru_train_p0", lambda: nn.GRU(5, 7, num_layers=2, dropout=0.0, bidirectional=True), torch.float64, True),
    ("rnn_eval", lambda: nn.RNN(5, 7, num_layers=2, nonlinearity="relu", dropout=0.5), torch.float64, False),
    ("lstm_train_p0", lambda: nn.LSTM(5, 7, num_layers=2, dropout=0.0, bidirectional=True), torch.float32, True),
]


def recurrent(t):
    for name, make, dtype, train in RNN_CASES:
        layer = make().to(dtype)
        layer.train(train)
        p = f"rnn.{name}"
        for k, v in layer.state_dict().items():
            t[f"{p}.init.{k}"] = v.detach().clone()
        x = torch.randn(3, 4, 5, dtype=dtype, requires_grad=True)
        out, state = layer(x)
        g = torch.randn_like(out)
        (out * g).sum().backward()
        t[f"{p}.x"], t[f"{p}.g"], t[f"{p}.out"], t[f"{p}.dx"] = x.detach(), g, out.detach(), x.grad
        h_n, c_n = state if isinstance(state, tuple) else (state, None)
        t[f"{p}.h_n"] = h_n.detach()
        if c_n is not None:
            t[f"{p}.c_n"] = c_n.detach()
        for k, v in layer.named_parameters():
            t[f"{p}.grad.{k}"] = v.grad.clone()


def time_major(t):
    model = nn.Sequential(OrderedDict(lstm=LSTMOut(5, 8, num_layers=2, dropout=0.25), last=LastStep(False),
                                      fc=nn.Linear(8, 3))).double().eval()
    for k, v in model.state_dict().items():
        t[f"time_major.init.{k}"] = v.detach().clone()
    x = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    g = torch.randn_like(logits)
    (logits * g).sum().backward()
    t["time_major.x"], t["time_major.g"], t["time_major.logits"], t["time_major.dx"] = (
        x.detach(), g, logits.detach(), x.grad)


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def chain(layers):
    mods = OrderedDict()
    for i, l in enumerate(layers):
        mods[l.get("name", str(i))] = module(l)
    return nn.Sequential(mods)


def module(l):
    """The torch module of a model-file layer, with PyTorch's defaults for keys left out."""
    t = l["type"]
    if t == "Linear":
        return nn.Linear(l.get("in_features", 1), l["out_features"], bias=l.get("bias", True))
    if t in ("ReLU", "Sigmoid", "Tanh", "Flatten", "LastStep", "Dropout", "Softmax", "LogSoftmax", "GELU",
             "LeakyReLU", "ELU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "SiLU", "MaxPool1d", "AvgPool1d",
             "AdaptiveAvgPool1d"):
        return nn.Identity()  # no parameters, no buffers: the keys are all that matters here
    if t == "Conv2d":
        return nn.Conv2d(l.get("in_channels", 1), l["out_channels"], pair(l["kernel_size"]),
                         groups=l.get("groups", 1), bias=l.get("bias", True))
    if t == "Conv1d":
        return nn.Conv1d(l.get("in_channels", 1), l["out_channels"], l["kernel_size"],
                         groups=l.get("groups", 1), bias=l.get("bias", True))
    if t in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(nn, t)(l.get("num_features", 1), affine=l.get("affine", True),
                               track_running_stats=l.get("track_running_stats", True))
    if t == "LayerNorm":
        return nn.LayerNorm(l["normalized_shape"], elementwise_affine=l.get("elementwise_affine", True))
    if t == "Embedding":
        return nn.Embedding(l["num_embeddings"], l["embedding_dim"], padding_idx=l.get("padding_idx"))
    if t in ("RNN", "LSTM", "GRU"):
        cls = {"RNN": RNNOut, "LSTM": LSTMOut, "GRU": GRUOut}[t]
        return cls(l.get("input_size", 1), l["hidden_size"], num_layers=l.get("num_layers", 1),
                   bias=l.get("bias", True), bidirectional=l.get("bidirectional", False))
    if t == "Sequential":
        return chain(l["layers"])
    if t == "Residual":
        return Residual(chain(l["layers"]), chain(l["shortcut"]) if l.get("shortcut") else None)
    if t in ("Add", "Concat"):
        return Branches([chain(b) for b in l["branches"]], t, l.get("dim", 1))
    raise ValueError(f"layer type {t}")


def example_keys():
    meta = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml"))):
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        if "layers" not in doc:
            continue  # a run file
        model = chain(doc["layers"])
        meta[f"keys.{os.path.basename(path)}"] = ",".join(model.state_dict().keys())
    return meta


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = {}
    gelu_tanh(t, torch.float32)
    gelu_tanh(t, torch.float64)
    recurrent(t)
    time_major(t)
    t = {k: v.contiguous() for k, v in t.items()}
    meta = example_keys()
    save_file(t, OUT, metadata=meta)
    print(f"wrote {len(t)} tensors and {len(meta)} key lists to {os.path.relpath(OUT, ROOT)}")
    for k, v in meta.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
