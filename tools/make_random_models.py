#!/usr/bin/env python3
"""Random-architecture differential fixtures: PyTorch's numbers for a few hundred random models.

Draws random *valid* models from every layer kind and option that strata's model files support
(Linear, the activations, Flatten, Conv2d with stride/padding/dilation/groups/bias, MaxPool2d,
AvgPool2d with count_include_pad, AdaptiveAvgPool2d, BatchNorm1d/2d with every option,
LayerNorm, GroupNorm with every option, Dropout(p=0), Embedding with padding_idx, RNN/LSTM/GRU with every option and
LastStep, nested Sequential blocks, Residual with and without a shortcut, Add/Concat branches
including identity branches ``[]``), a loss (CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss,
MSELoss with their options) and an optimizer (SGD, Adam, AdamW with their options,
``foreach=False``). For each model PyTorch computes, in float64 and in float32 from the same
initial weights and inputs (both exactly representable in float32):

- ``logits`` and ``loss`` of the first forward in training mode, the input gradient (float
  inputs) and every parameter gradient of its backward, and the float buffers after that forward
  (BatchNorm's running statistics; ``num_batches_tracked`` is compared exactly);
- ``losses``, the loss of each of three ``zero_grad / forward / backward / step`` iterations,
  and every parameter after the third step;
- ``eval_logits``: the forward in evaluation mode after the three steps.

Written under ``crates/nn/tests/fixtures/differential/``:

- ``models/<case>.toml``: each model as a strata model file (parameter names equal PyTorch's
  state_dict keys: Sequential children by name or position, ``body.``/``shortcut.`` in a
  Residual, ``branches.<i>.`` in Add/Concat);
- ``cases.toml``: per case the model file, input shape, loss and optimizer options, and PyTorch's
  own float32 error on every quantity: ``torch_f32_err_plain`` is ``max_i |torch_f32_i -
  torch_f64_i|``; ``torch_f32_err``, which sets the test's float32 tolerance, is the largest of
  that and the same error of two more float32 runs whose inputs and initial state were moved by
  one float32 ulp per element (what any backward-stable float32 implementation may differ by);
- ``tensors.safetensors``: ``<case>.init.<key>`` (the initial state_dict, float32, incl.
  buffers), ``<case>.x``, ``<case>.target``, ``<case>.loss_weight`` / ``<case>.pos_weight``
  (float32 or int64), and the float64 references ``<case>.ref.<quantity>``.

A drawn case is redrawn when it is ill-conditioned: a parameter whose float64 gradient is below
1e-6 of the largest (a bias before a normalisation that removes it: its gradient is rounding
noise, which Adam would turn into steps of lr), or a run whose loss grows tenfold. Five special
groups reach strata's fast paths: stride-1 3x3 convolutions on 28x28 and 14x14 planes with 8-16
channels (Winograd), LSTM/GRU at batches of 33-64 (the blocked, fused LSTM), a 512x96x96 Linear
(threaded GEMM), and batches of one through Concat of identity branches (issue 11's fault). A
sixth, cases 240-247 (added after the first 240, which it leaves unchanged), has GroupNorm after
convolutions: one group, several, one per channel, affine or not, eps 1e-5 or 1e-3.

The Rust side is ``crates/nn/tests/differential.rs``. Regenerate with::

    python3 tools/make_random_models.py            # ~10 s; prints a coverage summary

Everything runs with ``torch.set_num_threads(1)`` and fixed seeds: ``random.Random(case)`` for
the architecture (``random.Random(f"{case}/{attempt}")`` for a redraw), ``random.Random(1_000_000
+ case)`` for the loss and optimizer options, ``torch.manual_seed(10_000 + case + 1_000_000 *
attempt)`` for weights and data, and generators seeded 1 and 2 for the ulp nudges; the files are
the same on every run (the safetensors header order may differ; compare tensors, not hashes).
"""

import copy
import math
import os
import random
import sys
from collections import Counter

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests", "fixtures", "differential")
NUM_CASES = 248

COVER = Counter()  # what the generated set covers, printed at the end


# --------------------------------------------------------------------------------------------
# Layers: a layer is a dict {"type": ..., "name": str|None, options..., children}; a chain is a
# list of layers. `to_toml` writes strata's model-file syntax, `to_torch` the equivalent module.
# --------------------------------------------------------------------------------------------


class Residual(nn.Module):
    """strata's Residual: body(x) + shortcut(x) (the identity when there is no shortcut)."""

    def __init__(self, body, shortcut):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut
        self.has_shortcut = shortcut is not None

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.has_shortcut else x)


class Branches(nn.Module):
    """strata's Add / Concat: every chain on the same input, summed in order or concatenated."""

    def __init__(self, chains, merge, dim):
        super().__init__()
        self.branches = nn.ModuleList(chains)
        self.merge, self.dim = merge, dim

    def forward(self, x):
        ys = [b(x) for b in self.branches]
        if self.merge == "Concat":
            return torch.cat(ys, self.dim)
        out = ys[0]
        for y in ys[1:]:
            out = out + y
        return out


class LastStep(nn.Module):
    """strata's LastStep: out[:, -1] (batch_first) or out[-1]."""

    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first

    def forward(self, x):
        return x[:, -1] if self.batch_first else x[-1]


def _seq_out(cls):
    """A recurrent layer that returns only its output sequence, with the same state_dict keys."""

    class Out(cls):
        def forward(self, x):
            return super().forward(x)[0]

    Out.__name__ = cls.__name__
    return Out


RNNOut, LSTMOut, GRUOut = _seq_out(nn.RNN), _seq_out(nn.LSTM), _seq_out(nn.GRU)


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and isinstance(v, tuple) and v[0] == v[1]:
            return str(v[0])
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


CHILD_KEYS = ("layers", "shortcut", "branches")


def layer_toml(layer):
    fields = []
    if layer.get("name") is not None:
        fields.append(f'name = "{layer["name"]}"')
    fields.append(f'type = "{layer["type"]}"')
    for k, v in layer.items():
        if k in ("type", "name") or k in CHILD_KEYS:
            continue
        fields.append(f"{k} = {toml_value(v)}")
    if "layers" in layer:
        fields.append("layers = [" + ", ".join(layer_toml(c) for c in layer["layers"]) + "]")
    if layer.get("shortcut") is not None:
        fields.append("shortcut = [" + ", ".join(layer_toml(c) for c in layer["shortcut"]) + "]")
    if "branches" in layer:
        chains = ["[" + ", ".join(layer_toml(c) for c in ch) + "]" for ch in layer["branches"]]
        fields.append("branches = [" + ", ".join(chains) + "]")
    return "{ " + ", ".join(fields) + " }"


def model_toml(name, input_shape, input_dtype, dtype, chain):
    lines = [f'name = "{name}"']
    if input_shape is not None:
        lines.append(f"input = {list(input_shape)}")
    if input_dtype != "f32":
        lines.append(f'input_dtype = "{input_dtype}"')
    if dtype != "f32":
        lines.append(f'dtype = "{dtype}"')
    lines.append("layers = [")
    lines.extend(f"  {layer_toml(l)}," for l in chain)
    lines.append("]")
    return "\n".join(lines) + "\n"


def chain_torch(chain):
    from collections import OrderedDict

    mods = OrderedDict()
    for i, l in enumerate(chain):
        mods[l["name"] if l.get("name") is not None else str(i)] = layer_torch(l)
    return nn.Sequential(mods)


def layer_torch(l):
    t = l["type"]
    COVER[t] += 1
    for key, value in (("bias", False), ("affine", False), ("track_running_stats", False), ("momentum", "None"),
                       ("nonlinearity", "relu"), ("elementwise_affine", False)):
        if key in l and l[key] == value:
            COVER[f"{t} {key}={value}"] += 1
    if l.get("padding_idx") is not None:
        COVER[f"{t} padding_idx"] += 1
    if t == "Linear":
        return nn.Linear(l["in_features"], l["out_features"], bias=l.get("bias", True))
    if t in ("ReLU", "Sigmoid", "Tanh", "GELU"):
        return getattr(nn, t)()
    if t == "LeakyReLU":
        return nn.LeakyReLU(l["negative_slope"])
    if t == "ELU":
        return nn.ELU(l["alpha"])
    if t in ("Softmax", "LogSoftmax"):
        return getattr(nn, t)(dim=l["dim"])
    if t == "Flatten":
        return nn.Flatten(l.get("start_dim", 1), l.get("end_dim", -1))
    if t == "Dropout":
        return nn.Dropout(l["p"])
    if t == "Conv2d":
        return nn.Conv2d(l["in_channels"], l["out_channels"], pair(l["kernel_size"]), pair(l["stride"]),
                         pair(l["padding"]), pair(l["dilation"]), l["groups"], l["bias"])
    if t == "MaxPool2d":
        return nn.MaxPool2d(pair(l["kernel_size"]), pair(l["stride"]), pair(l["padding"]), pair(l["dilation"]))
    if t == "AvgPool2d":
        COVER[f"AvgPool2d padding>0 count_include_pad={l['count_include_pad']}"] += max(l["padding"]) > 0
        return nn.AvgPool2d(pair(l["kernel_size"]), pair(l["stride"]), pair(l["padding"]),
                            count_include_pad=l["count_include_pad"])
    if t == "AdaptiveAvgPool2d":
        return nn.AdaptiveAvgPool2d(pair(l["output_size"]))
    if t in ("BatchNorm1d", "BatchNorm2d"):
        m = l["momentum"]
        return getattr(nn, t)(l["num_features"], eps=l["eps"], momentum=None if m == "None" else m,
                               affine=l["affine"], track_running_stats=l["track_running_stats"])
    if t == "GroupNorm":
        return nn.GroupNorm(l["num_groups"], l["num_channels"], eps=l["eps"], affine=l["affine"])
    if t == "LayerNorm":
        return nn.LayerNorm(l["normalized_shape"], eps=l["eps"], elementwise_affine=l["elementwise_affine"])
    if t == "Embedding":
        return nn.Embedding(l["num_embeddings"], l["embedding_dim"], padding_idx=l.get("padding_idx"))
    if t in ("RNN", "LSTM", "GRU"):
        kw = dict(num_layers=l["num_layers"], bias=l["bias"], batch_first=l["batch_first"],
                  bidirectional=l["bidirectional"])
        if t == "RNN":
            return RNNOut(l["input_size"], l["hidden_size"], nonlinearity=l.get("nonlinearity", "tanh"), **kw)
        return (LSTMOut if t == "LSTM" else GRUOut)(l["input_size"], l["hidden_size"], **kw)
    if t == "LastStep":
        return LastStep(l["batch_first"])
    if t == "Sequential":
        return chain_torch(l["layers"])
    if t == "Residual":
        return Residual(chain_torch(l["layers"]), chain_torch(l["shortcut"]) if l.get("shortcut") else None)
    if t in ("Add", "Concat"):
        if any(len(ch) == 0 for ch in l["branches"]):
            COVER[t + " with identity branch"] += 1
        return Branches([chain_torch(ch) for ch in l["branches"]], t, l.get("dim", 1))
    raise ValueError(t)


# --------------------------------------------------------------------------------------------
# Random valid chains. `shape` is the full activation shape including the batch (`bdim` says
# where it is: 0, or 1 for time-major sequences); `n` is the batch size.
# --------------------------------------------------------------------------------------------


class Gen:
    def __init__(self, rng, n):
        self.r = rng
        self.n = n
        self.named = 0

    def name(self, prefix):
        # Half the layers are named (the other half get their position, as in nn.Sequential).
        if self.r.random() < 0.5:
            self.named += 1
            return f"{prefix}{self.named}"
        return None

    def activation(self, allow_softmax=True):
        r = self.r
        kinds = ["ReLU", "ReLU", "Sigmoid", "Tanh", "GELU", "LeakyReLU", "ELU"] + (["Softmax"] if allow_softmax else [])
        t = r.choice(kinds)
        if t == "LeakyReLU":
            return {"type": t, "negative_slope": r.choice([0.01, 0.2, 0.5])}
        if t == "ELU":
            return {"type": t, "alpha": r.choice([1.0, 0.5, 1.5])}
        if t == "Softmax":
            return {"type": t, "dim": r.choice([1, -1])}
        return {"type": t}

    def bn_options(self, num_features):
        r = self.r
        return {
            "num_features": num_features,
            "eps": r.choice([1e-5, 1e-3]),
            "momentum": r.choice([0.1, 0.3, "None"]),
            "affine": r.random() < 0.75,
            "track_running_stats": r.random() < 0.75,
        }

    def linear(self, fin, fout, bias=None):
        if bias is None:
            bias = self.r.random() < 0.8
        layer = {"type": "Linear", "name": self.name("fc"), "in_features": fin, "out_features": fout}
        if not bias:
            layer["bias"] = False
        return layer

    # ---- features [N, F] --------------------------------------------------------------------

    def mlp_chain(self, f, depth, allow_blocks=True):
        """Layers on [N, f]; returns (chain, f_out)."""
        r = self.r
        chain = []
        for _ in range(depth):
            choice = r.choice(["linear", "linear", "act", "act", "bn", "ln", "drop", "res", "add", "concat", "seq"]
                              if allow_blocks else ["linear", "linear", "act", "bn", "ln", "drop"])
            if choice == "linear":
                fout = r.randint(2, 12)
                nxt_bn = r.random() < 0.3 and self.n > 1
                chain.append(self.linear(f, fout, bias=False if nxt_bn else None))
                f = fout
                if nxt_bn:
                    chain.append({"type": "BatchNorm1d", "name": self.name("bn"), **self.bn_options(f)})
            elif choice == "act":
                chain.append(self.activation())
            elif choice == "bn" and self.n > 1:
                chain.append({"type": "BatchNorm1d", "name": self.name("bn"), **self.bn_options(f)})
            elif choice == "ln" and f >= 4:
                # (Over fewer than 4 values a LayerNorm's output is nearly constant: its gradient
                # is all cancellation.)
                chain.append({"type": "LayerNorm", "name": self.name("ln"), "normalized_shape": [f],
                              "eps": r.choice([1e-5, 1e-6]), "elementwise_affine": r.random() < 0.75})
            elif choice == "drop":
                chain.append({"type": "Dropout", "p": 0.0})
            elif choice == "res":
                if r.random() < 0.5:
                    body = [self.linear(f, f), self.activation(False), self.linear(f, f)]
                    chain.append({"type": "Residual", "name": self.name("res"), "layers": body})
                else:
                    fo = r.randint(2, 10)
                    body = [self.linear(f, fo), self.activation(False)]
                    chain.append({"type": "Residual", "name": self.name("res"), "layers": body,
                                  "shortcut": [self.linear(f, fo)]})
                    f = fo
            elif choice == "add":
                branches = [[self.linear(f, f)], [], [self.activation(False)]][: r.randint(2, 3)]
                if r.random() < 0.5:
                    branches[0].append(self.activation(False))
                r.shuffle(branches)
                chain.append({"type": "Add", "name": self.name("add"), "branches": branches})
            elif choice == "concat":
                fa = r.randint(1, 6)
                branches = [[self.linear(f, fa)], [], [self.activation(False)]][: r.randint(2, 3)]
                order = list(range(len(branches)))
                r.shuffle(order)
                branches = [branches[i] for i in order]
                widths = [[fa, f, f][i] for i in order]
                layer = {"type": "Concat", "name": self.name("cat"), "branches": branches}
                d = r.choice([1, -1, None])
                if d is not None:
                    layer["dim"] = d
                chain.append(layer)
                f = sum(widths)
            elif choice == "seq":
                inner, f = self.mlp_chain(f, r.randint(1, 3), allow_blocks=False)
                chain.append({"type": "Sequential", "name": self.name("block"), "layers": inner})
        return chain, f

    # ---- images [N, C, H, W] ----------------------------------------------------------------

    def conv(self, c, h, w, cout=None, k=None, stride=None, padding=None, dilation=None, groups=None, bias=None):
        r = self.r
        for _ in range(100):
            co = cout or r.randint(1, 8)
            kk = k or r.choice([1, 2, 3, 3, (3, 2), (1, 3)])
            kh, kw = pair(kk)
            s = stride or r.choice([1, 1, 2, (2, 1)])
            p = padding if padding is not None else r.choice([0, 0, 1, (1, 0), 2])
            d = dilation or r.choice([1, 1, 1, 2])
            g = groups or r.choice([g for g in (1, 2, 3, 4) if c % g == 0 and co % g == 0] or [1])
            if c % g or co % g:
                continue
            sh, sw = pair(s)
            ph, pw = pair(p)
            dh, dw = pair(d)
            oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            if oh >= 1 and ow >= 1:
                b = bias if bias is not None else r.random() < 0.75
                layer = {"type": "Conv2d", "name": self.name("conv"), "in_channels": c, "out_channels": co,
                         "kernel_size": pair(kk), "stride": pair(s), "padding": pair(p), "dilation": pair(d),
                         "groups": g, "bias": b}
                COVER[f"Conv2d groups>1"] += g > 1
                COVER[f"Conv2d dilation>1"] += d != 1
                COVER[f"Conv2d stride>1"] += s != 1
                return layer, co, oh, ow
        raise RuntimeError("no conv fits")

    def pool(self, c, h, w):
        r = self.r
        for _ in range(100):
            t = r.choice(["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"])
            if t == "AdaptiveAvgPool2d":
                o = (r.randint(1, h), r.randint(1, w))
                return {"type": t, "output_size": o}, c, o[0], o[1]
            k = r.choice([2, 3, (2, 3)])
            kh, kw = pair(k)
            s = r.choice([1, 2, k])
            sh, sw = pair(s)
            p = r.choice([0, 1])
            if p * 2 > min(kh, kw):
                continue
            # Dilation with padding can put a whole window in the padding, where PyTorch's
            # max_pool2d backward writes out of bounds (a heap corruption, seen with torch 2.15).
            d = r.choice([1, 1, 2]) if t == "MaxPool2d" and p == 0 else 1
            oh = (h + 2 * p - d * (kh - 1) - 1) // sh + 1
            ow = (w + 2 * p - d * (kw - 1) - 1) // sw + 1
            if oh < 1 or ow < 1:
                continue
            layer = {"type": t, "kernel_size": pair(k), "stride": pair(s), "padding": (p, p)}
            if t == "MaxPool2d":
                layer["dilation"] = (d, d)
            else:
                layer["count_include_pad"] = r.random() < 0.5
            return layer, c, oh, ow
        raise RuntimeError("no pool fits")

    def conv_chain(self, c, h, w, depth, allow_blocks=True):
        r = self.r
        chain = []
        for _ in range(depth):
            choice = r.choice(["conv", "conv", "conv", "pool", "pool", "act", "bn", "ln", "res", "concat", "add", "seq", "drop"]
                              if allow_blocks else ["conv", "conv", "pool", "act", "bn"])
            if choice == "conv":
                layer, c, h, w = self.conv(c, h, w)
                chain.append(layer)
            elif choice == "pool":
                layer, c, h, w = self.pool(c, h, w)
                chain.append(layer)
            elif choice == "act":
                chain.append(self.activation(allow_softmax=False) if r.random() < 0.9 else {"type": "Softmax", "dim": 1})
            elif choice == "bn" and self.n * h * w > 1:
                chain.append({"type": "BatchNorm2d", "name": self.name("bn"), **self.bn_options(c)})
            elif choice == "ln" and c * h * w >= 4:
                ns = r.choice([s for s in ([c, h, w], [h, w], [w]) if math.prod(s) >= 4])
                chain.append({"type": "LayerNorm", "name": self.name("ln"), "normalized_shape": ns,
                              "eps": 1e-5, "elementwise_affine": r.random() < 0.75})
            elif choice == "drop":
                chain.append({"type": "Dropout", "p": 0.0})
            elif choice == "res":
                if r.random() < 0.5 or min(h, w) < 2:
                    a, _, _, _ = self.conv(c, h, w, cout=c, k=3, stride=1, padding=1, dilation=1)
                    body = [a]
                    if self.n * h * w > 1 and r.random() < 0.6:
                        body.append({"type": "BatchNorm2d", "name": self.name("bn"), **self.bn_options(c)})
                    body.append(self.activation(False))
                    b, _, _, _ = self.conv(c, h, w, cout=c, k=3, stride=1, padding=1, dilation=1)
                    body.append(b)
                    chain.append({"type": "Residual", "name": self.name("res"), "layers": body})
                else:
                    co = r.randint(1, 8)
                    s = r.choice([1, 2])
                    a, co, oh, ow = self.conv(c, h, w, cout=co, k=3, stride=s, padding=1, dilation=1, groups=1)
                    sc, _, _, _ = self.conv(c, h, w, cout=co, k=1, stride=s, padding=0, dilation=1, groups=1)
                    chain.append({"type": "Residual", "name": self.name("res"), "layers": [a, self.activation(False)],
                                  "shortcut": [sc]})
                    c, h, w = co, oh, ow
            elif choice == "concat":
                a, ca, _, _ = self.conv(c, h, w, k=3, stride=1, padding=1, dilation=1)
                branches = [[a], [], [{"type": "MaxPool2d", "kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1),
                                       "dilation": (1, 1)}]][: r.randint(2, 3)]
                widths = [ca, c, c][: len(branches)]
                order = list(range(len(branches)))
                r.shuffle(order)
                branches = [branches[i] for i in order]
                dim = r.choice([1, 1, 1, 2, 3])
                if dim == 1:
                    c = sum(widths[i] for i in order)
                else:
                    # Concatenating along H or W needs equal channels: identity and pools only.
                    branches = [[], [{"type": "AvgPool2d", "kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1),
                                      "count_include_pad": r.random() < 0.5}]]
                    if dim == 2:
                        h *= 2
                    else:
                        w *= 2
                chain.append({"type": "Concat", "name": self.name("cat"), "branches": branches, "dim": dim})
            elif choice == "add":
                a, _, _, _ = self.conv(c, h, w, cout=c, k=3, stride=1, padding=1, dilation=r.choice([1, 1]))
                branches = [[a], [], [{"type": "AvgPool2d", "kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1),
                                       "count_include_pad": r.random() < 0.5}]][: r.randint(2, 3)]
                r.shuffle(branches)
                chain.append({"type": "Add", "name": self.name("add"), "branches": branches})
            elif choice == "seq":
                inner, c, h, w = self.conv_chain(c, h, w, r.randint(1, 3), allow_blocks=False)
                chain.append({"type": "Sequential", "name": self.name("block"), "layers": inner})
        return chain, c, h, w

    # ---- sequences [N, T, F] or [T, N, F] ---------------------------------------------------

    def recurrent(self, f, batch_first, kind=None, hidden=None):
        r = self.r
        t = kind or r.choice(["RNN", "LSTM", "GRU"])
        layer = {"type": t, "name": self.name(t.lower()), "input_size": f, "hidden_size": hidden or r.randint(2, 8),
                 "num_layers": r.choice([1, 1, 2]), "bias": r.random() < 0.8, "batch_first": batch_first,
                 "bidirectional": r.random() < 0.4}
        if t == "RNN" and r.random() < 0.4:
            layer["nonlinearity"] = "relu"
        COVER[f"{t} num_layers={layer['num_layers']} bidirectional={layer['bidirectional']}"] += 1
        COVER[f"recurrent batch_first={batch_first}"] += 1
        return layer, layer["hidden_size"] * (2 if layer["bidirectional"] else 1)

    def seq_chain(self, f, t, batch_first, depth):
        """Layers on a sequence; returns (chain, f_out) with the sequence still 3-D."""
        r = self.r
        chain = []
        for i in range(depth):
            choice = "rnn" if i == 0 else r.choice(["rnn", "rnn", "linear", "act", "ln", "concat", "res", "bn"])
            if choice == "rnn":
                layer, f = self.recurrent(f, batch_first)
                chain.append(layer)
            elif choice == "linear":
                fo = r.randint(2, 8)
                chain.append(self.linear(f, fo))
                f = fo
            elif choice == "act":
                chain.append(self.activation())
            elif choice == "ln" and f >= 4:
                chain.append({"type": "LayerNorm", "name": self.name("ln"), "normalized_shape": [f], "eps": 1e-5,
                              "elementwise_affine": r.random() < 0.75})
            elif choice == "bn" and batch_first:
                # BatchNorm1d on [N, T, F] normalises over N and F per time step (T channels).
                chain.append({"type": "BatchNorm1d", "name": self.name("bn"), **self.bn_options(t)})
            elif choice == "concat":
                layer, fa = self.recurrent(f, batch_first)
                chain.append({"type": "Concat", "name": self.name("cat"), "branches": [[layer], []],
                              "dim": r.choice([2, -1])})
                f = fa + f
            elif choice == "res":
                chain.append({"type": "Residual", "name": self.name("res"),
                              "layers": [self.linear(f, f), self.activation(False)]})
        return chain, f


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def head(g, chain, f, k, loss_kind):
    chain.append(g.linear(f, k))
    if loss_kind == "NLLLoss":
        chain.append({"type": "LogSoftmax", "dim": g.r.choice([1, -1])})
    return chain


def draw_case(i, attempt):
    """(family, input shape with batch, input dtype, chain, per-sample `input`, k outputs, loss kind)."""
    r = random.Random(i if attempt == 0 else f"{i}/{attempt}")
    loss_kind = r.choice(["CrossEntropyLoss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "MSELoss"])
    k = r.randint(2, 6)
    special = SPECIALS.get(i)
    family = special or r.choice(["mlp", "mlp", "mlp", "conv", "conv", "conv", "seq", "seq", "emb"])
    n = r.choice([1, 1, 2, 3, 4, 5, 8])
    if family == "mlp":
        g = Gen(r, n)
        f = r.randint(2, 16)
        chain, fo = g.mlp_chain(f, r.randint(2, 6))
        return family, (n, f), "f32", head(g, chain, fo, k, loss_kind), [f], k, loss_kind
    if family == "batch1_mlp":
        # Issue 11's repro: Concat of identity branches on a batch of one, on the input itself.
        n = 1
        g = Gen(r, n)
        f = r.randint(2, 8)
        chain = [{"type": "Concat", "name": "twice", "branches": [[], []] if r.random() < 0.5 else [[], [], []]}]
        f2 = f * len(chain[0]["branches"])
        more, fo = g.mlp_chain(f2, r.randint(1, 3))
        if not more or more[0]["type"] != "Linear":
            more.insert(0, g.linear(f2, f2))
            fo = f2 if len(more) == 1 else fo
        chain += more
        return family, (n, f), "f32", head(g, chain, fo, k, loss_kind), [f], k, loss_kind
    if family == "gemm":
        # Large enough for the threaded GEMM paths (≥ 2^22 multiply-adds in forward and dW).
        n = 512
        g = Gen(r, n)
        chain = [g.linear(96, 96), {"type": "ReLU"}, g.linear(96, 16), {"type": "Tanh"}]
        return family, (n, 96), "f32", head(g, chain, 16, k, loss_kind), [96], k, loss_kind
    if family in ("conv", "conv28", "conv14", "batch1"):
        if family == "batch1":
            n = 1
        g = Gen(r, n)
        if family == "conv28" or family == "conv14":
            n = r.choice([1, 2])
            g = Gen(r, n)
            hw = 28 if family == "conv28" else 14
            c = r.choice([1, 3, 8])
            co = r.choice([8, 16])
            a, c1, h, w = g.conv(c, hw, hw, cout=co, k=3, stride=1, padding=1, dilation=1, groups=1)
            b, c2, h, w = g.conv(c1, h, w, cout=r.choice([8, 16]), k=3, stride=1, padding=r.choice([0, 1]),
                                 dilation=1, groups=1)
            chain = [a, {"type": "ReLU"}, b]
            if r.random() < 0.5:
                chain.append({"type": "BatchNorm2d", "name": g.name("bn"), **g.bn_options(c2)})
            chain += [{"type": "ReLU"}, {"type": "AdaptiveAvgPool2d", "output_size": (2, 2)},
                      {"type": "Flatten"}]
            COVER[f"large conv {hw}x{hw}"] += 1
            return family, (n, c, hw, hw), "f32", head(g, chain, c2 * 4, k, loss_kind), [c, hw, hw], k, loss_kind
        c, h, w = r.randint(1, 4), r.randint(4, 11), r.randint(4, 11)
        chain, c2, h2, w2 = g.conv_chain(c, h, w, r.randint(1, 5))
        if family == "batch1":
            # The fault of issue 11: a Concat of identity branches on a batch of one.
            chain.append({"type": "Concat", "name": "twice", "branches": [[], []]})
            c2 *= 2
        if r.random() < 0.5 or c2 * h2 * w2 > 300:
            chain += [{"type": "AdaptiveAvgPool2d", "output_size": (1, r.choice([1, 2]))}, {"type": "Flatten"}]
            fo = c2 * chain[-2]["output_size"][1]
        else:
            chain.append({"type": "Flatten"})
            fo = c2 * h2 * w2
        return family, (n, c, h, w), "f32", head(g, chain, fo, k, loss_kind), [c, h, w], k, loss_kind
    if family == "group_norm":
        g = Gen(r, n)
        c, h, w = r.randint(1, 4), r.randint(3, 8), r.randint(3, 8)
        c0, h0, w0 = c, h, w
        chain = []
        for _ in range(r.randint(1, 2)):
            co = r.choice([2, 4, 6, 8])
            groups = r.choice([d for d in (1, 2, 3, 4, co) if co % d == 0])
            # One channel per group removes a convolution's bias exactly (its gradient vanishes).
            conv, c, h, w = g.conv(c, h, w, cout=co, k=3, stride=1, padding=1, dilation=1,
                                   bias=False if groups == co else None)
            chain.append(conv)
            chain.append({"type": "GroupNorm", "name": g.name("gn"), "num_groups": groups, "num_channels": co,
                          "eps": r.choice([1e-5, 1e-3]), "affine": r.random() < 0.75})
            COVER[f"GroupNorm {'one group' if groups == 1 else 'one channel per group' if groups == co else 'groups'}"] += 1
            chain.append(g.activation(allow_softmax=False))
        if c * h * w > 300:
            chain += [{"type": "AdaptiveAvgPool2d", "output_size": (2, 2)}, {"type": "Flatten"}]
            fo = c * 4
        else:
            chain.append({"type": "Flatten"})
            fo = c * h * w
        return family, (n, c0, h0, w0), "f32", head(g, chain, fo, k, loss_kind), [c0, h0, w0], k, loss_kind
    if family in ("seq", "lstm_big"):
        if family == "lstm_big":
            n = r.choice([33, 40, 64])
        g = Gen(r, n)
        batch_first = r.random() < 0.6
        t, f = r.randint(1, 6), r.randint(2, 8)
        if family == "lstm_big":
            layer, fo = g.recurrent(f, batch_first, kind=r.choice(["LSTM", "LSTM", "GRU"]), hidden=r.choice([8, 16]))
            chain = [layer]
            if r.random() < 0.5:
                l2, fo = g.recurrent(fo, batch_first, kind="LSTM")
                chain.append(l2)
        else:
            chain, fo = g.seq_chain(f, t, batch_first, r.randint(1, 4))
        if batch_first and r.random() < 0.3:
            chain.append({"type": "Flatten"})
            fo *= t
        else:
            chain.append({"type": "LastStep", "batch_first": batch_first})
        shape = (n, t, f) if batch_first else (t, n, f)
        # A time-major model file has no per-sample `input` (the batch is dimension 1).
        return family, shape, "f32", head(g, chain, fo, k, loss_kind), [t, f] if batch_first else None, k, loss_kind
    if family == "emb":
        g = Gen(r, n)
        vocab, dim, length = r.randint(3, 12), r.randint(4, 8), r.randint(1, 6)
        emb = {"type": "Embedding", "name": g.name("emb"), "num_embeddings": vocab, "embedding_dim": dim}
        if r.random() < 0.6:
            emb["padding_idx"] = r.randrange(vocab)
        chain = [emb]
        how = r.choice(["flatten", "rnn", "ln"])
        if how == "flatten":
            chain.append({"type": "Flatten"})
            more, fo = g.mlp_chain(dim * length, r.randint(1, 3))
            chain += more
        elif how == "rnn":
            more, fo = g.seq_chain(dim, length, True, r.randint(1, 2))
            chain += more + [{"type": "LastStep", "batch_first": True}]
        else:
            chain.append({"type": "LayerNorm", "name": g.name("ln"), "normalized_shape": [dim], "eps": 1e-5,
                          "elementwise_affine": True})
            chain.append(g.linear(dim, 3))
            chain.append(g.activation(False))
            chain.append({"type": "Flatten"})
            fo = 3 * length
        return family, (n, length), "i64", head(g, chain, fo, k, loss_kind), [length], k, loss_kind
    raise ValueError(family)


# Cases that reach strata's fast paths: big convolution planes (Winograd), batches > 32 through
# LSTM/GRU (the fused, blocked LSTM), threaded GEMMs, and batch-1 Concat of identities; and
# GroupNorm after convolutions (cases 240-247, appended so the first 240 stay as they were).
SPECIALS = {}
for j in range(6):
    SPECIALS[200 + j] = "conv28"
for j in range(6):
    SPECIALS[206 + j] = "conv14"
for j in range(8):
    SPECIALS[212 + j] = "lstm_big"
for j in range(2):
    SPECIALS[220 + j] = "gemm"
for j in range(8):
    SPECIALS[222 + j] = "batch1"
for j in range(6):
    SPECIALS[230 + j] = "batch1_mlp"
for j in range(8):
    SPECIALS[240 + j] = "group_norm"


def draw_loss(r, kind, k, n):
    """(torch criterion factory, metadata dict, extra tensors)."""
    reduction = r.choice(["mean", "mean", "sum", "none"])
    meta = {"type": kind, "reduction": reduction}
    extra = {}
    if kind in ("CrossEntropyLoss", "NLLLoss"):
        target = torch.randint(0, k, (n,))
        kw = {}
        if r.random() < 0.4:
            w = (torch.rand(k) + 0.25).float()
            extra["loss_weight"] = w
            kw["weight"] = w
            meta["weight"] = True
        if r.random() < 0.3:
            ii = int(target[0])
            if n > 1 and bool((target == ii).all()):
                target[-1] = (ii + 1) % k
            if n > 1:
                meta["ignore_index"] = ii
                kw["ignore_index"] = ii
        if kind == "CrossEntropyLoss" and r.random() < 0.4:
            ls = r.choice([0.1, 0.25])
            meta["label_smoothing"] = ls
            kw["label_smoothing"] = ls
        cls = nn.CrossEntropyLoss if kind == "CrossEntropyLoss" else nn.NLLLoss

        def make(dtype):
            kw2 = dict(kw)
            if "weight" in kw2:
                kw2["weight"] = kw2["weight"].to(dtype)
            return cls(reduction=reduction, **kw2)

        return make, meta, extra, target
    target = torch.rand(n, k) if kind == "BCEWithLogitsLoss" else torch.randn(n, k)
    if kind == "BCEWithLogitsLoss":
        if r.random() < 0.5:
            target = (target > 0.5).float()
        pw = None
        if r.random() < 0.4:
            pw = (torch.rand(k) * 2 + 0.25).float()
            extra["pos_weight"] = pw
            meta["pos_weight"] = True

        def make(dtype):
            return nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=None if pw is None else pw.to(dtype))

        return make, meta, extra, target

    def make(dtype):
        return nn.MSELoss(reduction=reduction)

    return make, meta, extra, target


def draw_optim(r):
    kind = r.choice(["SGD", "SGD", "Adam", "AdamW"])
    if kind == "SGD":
        m = r.choice([0.0, 0.9, 0.5])
        nesterov = m > 0 and r.random() < 0.4
        meta = {"type": kind, "lr": r.choice([0.1, 0.05, 0.01]), "momentum": m,
                "dampening": 0.0 if nesterov or r.random() < 0.6 else 0.3, "nesterov": nesterov,
                "weight_decay": r.choice([0.0, 0.0, 1e-2])}
        return meta, lambda p: torch.optim.SGD(p, lr=meta["lr"], momentum=m, dampening=meta["dampening"],
                                               nesterov=nesterov, weight_decay=meta["weight_decay"], foreach=False)
    meta = {"type": kind, "lr": r.choice([1e-2, 3e-3]), "beta1": r.choice([0.9, 0.8]),
            "beta2": r.choice([0.999, 0.99]), "eps": r.choice([1e-8, 1e-6]),
            "weight_decay": r.choice([0.0, 1e-2] if kind == "Adam" else [0.0, 1e-2, 0.1]),
            "amsgrad": r.random() < 0.3}
    cls = torch.optim.Adam if kind == "Adam" else torch.optim.AdamW
    return meta, lambda p: cls(p, lr=meta["lr"], betas=(meta["beta1"], meta["beta2"]), eps=meta["eps"],
                               weight_decay=meta["weight_decay"], amsgrad=meta["amsgrad"], foreach=False)


def randomise_state(model):
    """Moves BatchNorm/LayerNorm off their trivial initial values, so every term is exercised."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                if m.track_running_stats:
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(3)
            if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def run(model0, x, target, make_loss, make_opt, dtype, float_input):
    """Everything the test compares, from `model0` converted to `dtype`."""
    m = copy.deepcopy(model0).to(dtype)
    m.train()
    xd = x.to(dtype) if x.is_floating_point() else x
    tg = target.to(dtype) if target.is_floating_point() else target
    crit = make_loss(dtype)

    def loss_of(out):
        l = crit(out, tg)
        return l.sum() if l.dim() > 0 else l

    xg = xd.clone().requires_grad_(True) if float_input else xd
    out = m(xg)
    loss = loss_of(out)
    loss.backward()
    res = {"logits": out.detach(), "loss": loss.detach()}
    if float_input:
        res["grad_input"] = xg.grad.detach()
    for k, p in m.named_parameters():
        res[f"grad.{k}"] = p.grad.detach().clone()
    for k, b in m.named_buffers():
        res[f"buffer.{k}"] = b.detach().clone()
    opt = make_opt(m.parameters())
    losses = [loss.detach()]
    opt.step()
    for _ in range(2):
        opt.zero_grad()
        l = loss_of(m(xd))
        losses.append(l.detach())
        l.backward()
        opt.step()
    res["losses"] = torch.stack(losses)
    for k, p in m.named_parameters():
        res[f"step3.{k}"] = p.detach().clone()
    m.eval()
    with torch.no_grad():
        res["eval_logits"] = m(xd)
    return res


def draw_one(i, attempt):
    """Case `i` drawn and run by PyTorch, or None when it is ill-conditioned: a parameter whose
    gradient vanishes analytically (a bias before a normalisation over the dimensions it is
    constant in, anything before a LayerNorm over one element) has a float64 gradient that is
    pure rounding noise, which no implementation reproduces and which Adam amplifies by lr/eps;
    or a run that diverges."""
    cover = COVER.copy()
    family, shape, input_dtype, chain, per_sample, k, loss_kind = draw_case(i, attempt)
    r = random.Random(1_000_000 + i if attempt == 0 else f"loss {i}/{attempt}")
    torch.manual_seed(10_000 + i + 1_000_000 * attempt)
    name = f"c{i:03d}_{family}"
    model = chain_torch(chain)
    randomise_state(model)
    if input_dtype == "i64":
        vocab = chain[0]["num_embeddings"]
        x = torch.randint(0, vocab, shape)
        if chain[0].get("padding_idx") is not None:
            x.view(-1)[0] = chain[0]["padding_idx"]
    else:
        x = torch.randn(shape)
    n = shape[1] if family in ("seq", "lstm_big") and per_sample is None else shape[0]  # time-major: [T, N, F]
    make_loss, loss_meta, extra, target = draw_loss(r, loss_kind, k, n)
    opt_meta, make_opt = draw_optim(r)
    float_input = input_dtype == "f32" and family != "gemm"
    ref = run(model, x, target, make_loss, make_opt, torch.float64, float_input)
    grads = [v for q, v in ref.items() if q.startswith("grad")]
    top = max(float(g.abs().max()) for g in grads)
    finite = all(bool(torch.isfinite(v).all()) for v in ref.values() if v.is_floating_point())
    # A diverging run (a large learning rate on a summed loss) magnifies every rounding difference.
    diverging = not finite or float(ref["losses"].abs().max()) > 10 * abs(float(ref["losses"][0])) + 1
    if diverging or any(float(g.abs().max()) < 1e-6 * top for g in grads):
        COVER.clear()
        COVER.update(cover)
        return None
    # PyTorch's f32 error: its plain run, and two runs from inputs and initial state nudged by one
    # f32 ulp per element. A backward-stable f32 implementation computes the exact result of
    # inputs perturbed by a few ulps, so the perturbed runs show how far any correct f32
    # implementation may land from the f64 result, also where the quantity amplifies rounding
    # (an Adam step on a gradient element near eps, a ReLU or max-pool choice near a tie).
    errs = {}
    for nudge in range(3):
        m, xp = model, x
        if nudge:
            gen = torch.Generator().manual_seed(nudge)
            m = copy.deepcopy(model)
            with torch.no_grad():
                for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
                    t.copy_(ulp_nudge(t, gen))
            xp = ulp_nudge(x, gen) if x.is_floating_point() else x
        r32 = run(m, xp, target, make_loss, make_opt, torch.float32, float_input)
        for q, v in ref.items():
            if v.is_floating_point():
                d = (r32[q].double() - v).abs()
                e = float(d.max()) if d.numel() else 0.0
                if not math.isfinite(e):
                    return None
                errs[q] = max(errs.get(q, 0.0), e)
                if nudge == 0:
                    errs["plain:" + q] = e
    return (name, family, shape, input_dtype, chain, per_sample, loss_kind, model, x, target, extra, loss_meta,
            opt_meta, float_input, ref, errs)


def ulp_nudge(t, gen):
    """`t` with every element moved one f32 ulp up or down at random."""
    up = torch.rand(t.shape, generator=gen) < 0.5
    return torch.where(up, torch.nextafter(t, torch.tensor(math.inf)), torch.nextafter(t, torch.tensor(-math.inf)))


def main():
    torch.set_num_threads(1)
    os.makedirs(os.path.join(OUT, "models"), exist_ok=True)
    for f in os.listdir(os.path.join(OUT, "models")):
        os.remove(os.path.join(OUT, "models", f))
    tensors = {}
    cases = []
    families = Counter()
    losses_cov = Counter()
    optims_cov = Counter()
    for i in range(NUM_CASES):
        for attempt in range(100):
            drawn = draw_one(i, attempt)
            if drawn is not None:
                break
            COVER["redrawn (a vanishing gradient or a diverging run)"] += 1
        name, family, shape, input_dtype, chain, per_sample, loss_kind, model, x, target, extra, loss_meta, \
            opt_meta, float_input, ref, errs = drawn
        for key, t in model.state_dict().items():
            tensors[f"{name}.init.{key}"] = t.contiguous()
        tensors[f"{name}.x"] = x.contiguous()
        tensors[f"{name}.target"] = target.contiguous()
        for key, t in extra.items():
            tensors[f"{name}.{key}"] = t.contiguous()
        for q, v in ref.items():
            tensors[f"{name}.ref.{q}"] = v.contiguous()
        dtype_line = "f64" if i % 10 == 7 else "f32"  # a few files say dtype = "f64"; the test sets both
        with open(os.path.join(OUT, "models", f"{name}.toml"), "w") as fh:
            fh.write(f"# {name}: generated by tools/make_random_models.py (case {i}); do not edit.\n")
            fh.write(model_toml(name, per_sample, input_dtype, dtype_line, chain))
        cases.append((name, family, list(shape), loss_meta, opt_meta, errs, float_input))
        families[family] += 1
        losses_cov[" ".join(f"{k}={v}" for k, v in loss_meta.items())] += 1
        optims_cov[opt_meta["type"] + (" amsgrad" if opt_meta.get("amsgrad") else "")
                   + (" nesterov" if opt_meta.get("nesterov") else "")] += 1
    with open(os.path.join(OUT, "cases.toml"), "w") as fh:
        fh.write("# Differential cases: generated by tools/make_random_models.py; do not edit.\n")
        fh.write(f"# torch {torch.__version__}. torch_f32_err_plain.<q> = max_i |torch_f32_i - torch_f64_i| for quantity q;\n")
        fh.write("# torch_f32_err.<q>: the largest of that and the same from two runs with inputs and initial state\n")
        fh.write("# nudged by one f32 ulp per element.\n")
        for name, family, shape, lm, om, errs, float_input in cases:
            fh.write("\n[[case]]\n")
            fh.write(f'name = "{name}"\nfamily = "{family}"\nmodel = "models/{name}.toml"\n')
            fh.write(f"input_shape = {shape}\nfloat_input = {toml_value(float_input)}\n")
            fh.write("loss = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in lm.items()) + " }\n")
            fh.write("optim = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in om.items()) + " }\n")
            fh.write("[case.torch_f32_err]\n")
            for q, e in errs.items():
                if not q.startswith("plain:"):
                    fh.write(f'"{q}" = {e!r}\n')
            fh.write("[case.torch_f32_err_plain]\n")
            for q, e in errs.items():
                if q.startswith("plain:"):
                    fh.write(f'"{q[6:]}" = {e!r}\n')
    meta = {"torch_version": torch.__version__, "generator": "tools/make_random_models.py", "cases": str(len(cases))}
    save_file(tensors, os.path.join(OUT, "tensors.safetensors"), metadata=meta)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"{len(cases)} cases, {len(tensors)} tensors, {total / 1e6:.2f} MB under {os.path.normpath(OUT)}")
    print("families:", dict(families))
    print("optimizers:", dict(optims_cov))
    print("losses:")
    for k, v in sorted(losses_cov.items()):
        print(f"  {v:3d}  {k}")
    print("layers and options:")
    for k, v in sorted(COVER.items()):
        print(f"  {v:4d}  {k}")


if __name__ == "__main__":
    sys.exit(main())
