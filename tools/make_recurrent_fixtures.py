#!/usr/bin/env python3
"""Generate PyTorch reference values for strata's recurrent, embedding and activation parity
tests (``crates/nn/tests/recurrent_parity.rs``).

Writes, via ``safetensors.torch.save_file``:

* ``crates/nn/tests/fixtures/recurrent_layers.safetensors``: RNN (tanh, relu), LSTM, GRU
* ``crates/nn/tests/fixtures/recurrent_activations.safetensors``: activations and Embedding

Regenerate with::

    python3 tools/make_recurrent_fixtures.py

Global settings (applied before anything else)::

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

Float tensors are float32 unless the group says float64; indices are int64. The safetensors
metadata holds ``torch_version`` and ``generator``. The exact torch code behind every group of
keys follows.

Recurrent layers (group ``<g>.*`` for each row of the table)
------------------------------------------------------------
::

    torch.manual_seed(seed)
    layer = <ctor>                                  # see table, then .to(dtype)
    x = torch.randn(*x_shape, dtype=dtype)          # x_shape as in the table
    h0 = 0.5 * torch.randn(L * D, N, H, dtype=dtype)   # only when the table says "state";
    c0 = 0.5 * torch.randn(L * D, N, H, dtype=dtype)   # c0 for LSTMs only
    x.requires_grad_(); h0.requires_grad_(); c0.requires_grad_()
    out, h_n = layer(x, h0)                  # RNN / GRU, or layer(x) without state
    out, (h_n, c_n) = layer(x, (h0, c0))     # LSTM, or layer(x) without state
    w_out = torch.randn_like(out); w_h = torch.randn_like(h_n); w_c = torch.randn_like(c_n)
    loss = (out * w_out).sum() + (h_n * w_h).sum() [+ (c_n * w_c).sum()]
    loss.backward()
    # <g>.param.<name> = layer.state_dict()[name]  (before backward; PyTorch's names)
    # <g>.x, <g>.h0, <g>.c0, <g>.out, <g>.h_n, <g>.c_n, <g>.w_out, <g>.w_h, <g>.w_c
    # <g>.grad.x = x.grad, <g>.grad.h0 = h0.grad, <g>.grad.c0 = c0.grad,
    # <g>.grad.<name> = layer.<name>.grad

    group          seed  ctor                                                          x_shape     state  dtype
    rnn_tanh       1     nn.RNN(5, 7)                                                  (6, 3, 5)   yes    f32
    rnn_relu_bi    2     nn.RNN(5, 7, num_layers=2, nonlinearity='relu',              (3, 6, 5)   yes    f32
                           batch_first=True, bidirectional=True)
    lstm           3     nn.LSTM(5, 7)                                                 (6, 3, 5)   yes    f32
    lstm_bi        4     nn.LSTM(5, 7, num_layers=2, batch_first=True,                (3, 6, 5)   yes    f32
                           bidirectional=True)
    lstm_unbatched 5     nn.LSTM(5, 7, bias=False)                                     (6, 5)      no     f32
    lstm_mnist     6     nn.LSTM(28, 32, batch_first=True)                             (4, 28, 28) no     f64
    gru            7     nn.GRU(5, 7)                                                  (6, 3, 5)   yes    f32
    gru_bi         8     nn.GRU(5, 7, num_layers=2, batch_first=True,                 (3, 6, 5)   yes    f32
                           bidirectional=True)

``lstm_mnist`` is float64: 28 steps of f32 accumulation (in PyTorch's MKL GEMMs and in strata's)
leave gradient differences near 1e-6 relative, too close to the 1e-5 tolerance to be a useful
check, so this group checks the long sequence in f64 instead.

Activations (group ``act.*``, float32)
--------------------------------------
::

    torch.manual_seed(10)
    x = 3 * torch.randn(4, 6); x[0, 0] = 0.0; x[1, 3] = 0.0      # exact zeros: gradients at 0
    x3 = torch.randn(2, 3, 4)
    # for each (name, f, input) below:
    xi = input.clone().requires_grad_(); y = f(xi)
    w = torch.randn_like(y); (y * w).sum().backward()
    # act.<name>.y = y, act.<name>.w = w, act.<name>.grad = xi.grad; act.x = x, act.x3 = x3

    sigmoid       torch.sigmoid                           x
    tanh          torch.tanh                              x
    gelu          nn.GELU()            (approximate='none') x
    leaky_relu    nn.LeakyReLU()       (slope 0.01)       x
    leaky_relu_02 nn.LeakyReLU(0.2)                       x
    elu           nn.ELU()             (alpha 1.0)        x
    elu_07        nn.ELU(alpha=0.7)                       x
    softmax_1     nn.Softmax(dim=1)                       x
    log_softmax_0 nn.LogSoftmax(dim=0)                    x
    softmax3_1    nn.Softmax(dim=1)                       x3
    log_softmax3  nn.LogSoftmax(dim=-1)                   x3
    silu          nn.SiLU()                               x    (drawn after the others)
    mish          nn.Mish()                               x
    hardswish     nn.Hardswish()                          x
    hardsigmoid   nn.Hardsigmoid()                        x
    relu6         nn.ReLU6()                              x

Embedding (group ``emb.*``, float32 weight, int64 indices)
----------------------------------------------------------
::

    torch.manual_seed(11)
    emb = nn.Embedding(10, 4)
    idx = torch.tensor([[1, 3, 3, 9], [0, 3, 1, 1]])
    y = emb(idx)                                     # [2, 4, 4]
    w = torch.randn_like(y); (y * w).sum().backward()
    # emb.weight = emb.weight (before backward), emb.idx = idx, emb.y = y, emb.w = w,
    # emb.grad = emb.weight.grad
"""

import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "crates", "nn", "tests", "fixtures")

LAYERS = [
    # group, seed, ctor, x_shape, with_state, dtype
    ("rnn_tanh", 1, lambda: nn.RNN(5, 7), (6, 3, 5), True, torch.float32),
    (
        "rnn_relu_bi",
        2,
        lambda: nn.RNN(5, 7, num_layers=2, nonlinearity="relu", batch_first=True, bidirectional=True),
        (3, 6, 5),
        True,
        torch.float32,
    ),
    ("lstm", 3, lambda: nn.LSTM(5, 7), (6, 3, 5), True, torch.float32),
    (
        "lstm_bi",
        4,
        lambda: nn.LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True),
        (3, 6, 5),
        True,
        torch.float32,
    ),
    ("lstm_unbatched", 5, lambda: nn.LSTM(5, 7, bias=False), (6, 5), False, torch.float32),
    ("lstm_mnist", 6, lambda: nn.LSTM(28, 32, batch_first=True), (4, 28, 28), False, torch.float64),
    ("gru", 7, lambda: nn.GRU(5, 7), (6, 3, 5), True, torch.float32),
    (
        "gru_bi",
        8,
        lambda: nn.GRU(5, 7, num_layers=2, batch_first=True, bidirectional=True),
        (3, 6, 5),
        True,
        torch.float32,
    ),
]


def layer_group(out, g, seed, ctor, x_shape, with_state, dtype):
    torch.manual_seed(seed)
    layer = ctor().to(dtype)
    is_lstm = isinstance(layer, nn.LSTM)
    x = torch.randn(*x_shape, dtype=dtype)
    for name, p in layer.state_dict().items():
        out[f"{g}.param.{name}"] = p.detach().clone()
    args = []
    leaves = {"x": x}
    if with_state:
        ld = layer.num_layers * (2 if layer.bidirectional else 1)
        n = x_shape[0] if layer.batch_first else x_shape[1]
        h0 = 0.5 * torch.randn(ld, n, layer.hidden_size, dtype=dtype)
        leaves["h0"] = h0
        if is_lstm:
            c0 = 0.5 * torch.randn(ld, n, layer.hidden_size, dtype=dtype)
            leaves["c0"] = c0
            args = [(h0, c0)]
        else:
            args = [h0]
    for t in leaves.values():
        t.requires_grad_()
    result, state = layer(x, *args)
    states = {"h_n": state[0], "c_n": state[1]} if is_lstm else {"h_n": state}
    w_out = torch.randn_like(result)
    loss = (result * w_out).sum()
    out[f"{g}.out"] = result.detach().clone()
    out[f"{g}.w_out"] = w_out
    for key, s in states.items():
        w = torch.randn_like(s)
        out[f"{g}.{key}"] = s.detach().clone()
        out[f"{g}.w_{key[0]}"] = w
        loss = loss + (s * w).sum()
    loss.backward()
    for key, t in leaves.items():
        out[f"{g}.{key}"] = t.detach().clone()
        out[f"{g}.grad.{key}"] = t.grad.clone()
    for name, p in layer.named_parameters():
        out[f"{g}.grad.{name}"] = p.grad.clone()


def activations(out):
    torch.manual_seed(10)
    x = 3 * torch.randn(4, 6)
    x[0, 0] = 0.0
    x[1, 3] = 0.0
    x3 = torch.randn(2, 3, 4)
    out["act.x"] = x.clone()
    out["act.x3"] = x3.clone()
    cases = [
        ("sigmoid", torch.sigmoid, x),
        ("tanh", torch.tanh, x),
        ("gelu", nn.GELU(), x),
        ("leaky_relu", nn.LeakyReLU(), x),
        ("leaky_relu_02", nn.LeakyReLU(0.2), x),
        ("elu", nn.ELU(), x),
        ("elu_07", nn.ELU(alpha=0.7), x),
        ("softmax_1", nn.Softmax(dim=1), x),
        ("log_softmax_0", nn.LogSoftmax(dim=0), x),
        ("softmax3_1", nn.Softmax(dim=1), x3),
        ("log_softmax3", nn.LogSoftmax(dim=-1), x3),
        # After the others, so that their random weights w stay as they were.
        ("silu", nn.SiLU(), x),
        ("mish", nn.Mish(), x),
        ("hardswish", nn.Hardswish(), x),
        ("hardsigmoid", nn.Hardsigmoid(), x),
        ("relu6", nn.ReLU6(), x),
    ]
    for name, f, inp in cases:
        xi = inp.clone().requires_grad_()
        y = f(xi)
        w = torch.randn_like(y)
        (y * w).sum().backward()
        out[f"act.{name}.y"] = y.detach().clone()
        out[f"act.{name}.w"] = w
        out[f"act.{name}.grad"] = xi.grad.clone()


def embedding(out):
    torch.manual_seed(11)
    emb = nn.Embedding(10, 4)
    idx = torch.tensor([[1, 3, 3, 9], [0, 3, 1, 1]])
    out["emb.weight"] = emb.weight.detach().clone()
    y = emb(idx)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    out["emb.idx"] = idx
    out["emb.y"] = y.detach().clone()
    out["emb.w"] = w
    out["emb.grad"] = emb.weight.grad.clone()


def save(tensors, name):
    path = os.path.join(FIXTURES, name)
    meta = {"torch_version": torch.__version__, "generator": "tools/make_recurrent_fixtures.py"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print(f"{name}: {len(tensors)} tensors")
    for k in sorted(tensors):
        print(f"  {k:40s} {list(tensors[k].shape)} {tensors[k].dtype}")


def main():
    layers = {}
    for spec in LAYERS:
        layer_group(layers, *spec)
    save(layers, "recurrent_layers.safetensors")
    small = {}
    activations(small)
    embedding(small)
    save(small, "recurrent_activations.safetensors")


if __name__ == "__main__":
    main()
