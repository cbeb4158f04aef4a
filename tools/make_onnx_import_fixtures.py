#!/usr/bin/env python3
"""Writes the fixtures of `crates/nn/tests/onnx_import.rs` and `crates/cli/tests/import.rs`:
three PyTorch models exported by `torch.onnx.export(..., dynamo=False, opset_version=17)`
with a symbolic batch dimension, each with a small input batch and PyTorch's outputs.

    python3 tools/make_onnx_import_fixtures.py [NAME ...]   # all, or only the NAMEs given

For each NAME in simple_nn, resnet, lstm, gru, gelu, gelu_opset20, silu, conv1d, mish it writes,
under
crates/nn/tests/fixtures/onnx_import/:
  NAME.onnx               the exported graph (weights inside)
  NAME.io.safetensors     `input` (a batch of 3) and `output` (model(input) in eval mode)

The models (torch.manual_seed(0) before each; BatchNorm statistics and affine parameters
are drawn at random so that a mix-up of mean, variance, scale and shift shows):

  simple_nn  SimpleNN as examples/simple_nn.toml, fed [N, 1, 28, 28] images and flattened
             with x.view(x.size(0), -1) (Shape/Gather/Concat/Reshape in the graph):
               fc1 = Linear(784, 128); fc2 = Linear(128, 64); fc3 = Linear(64, 10)
               fc3(relu(fc2(relu(fc1(x.view(x.size(0), -1))))))
  resnet     a small ResNet on [N, 1, 28, 28] with strata's Residual semantics (body(x) +
             shortcut(x), the ReLU after the sum outside the block), as
             examples/resnet_mnist_model.toml with 8 and 16 channels; ONNX export folds each
             BatchNorm that follows a Conv into the Conv, so `bn_head`, a BatchNorm1d after
             the pooling, keeps a BatchNormalization node; a MaxPool2d and an AvgPool2d too
  lstm       as examples/lstm_mnist_model.toml with hidden_size 32:
               lstm = LSTM(28, 32, batch_first=True); fc = Linear(32, 10)
               out, _ = lstm(x); fc(out[:, -1, :])
  gru        stacked and bidirectional, PyTorch's other gate order:
               gru = GRU(28, 16, num_layers=2, bidirectional=True, batch_first=True)
               fc = Linear(32, 10); out, _ = gru(x); fc(out[:, -1, :])
  gelu       Linear(20, 16), GELU(), Linear(16, 12), GELU('tanh'), Linear(12, 10); at opset 20
             too (gelu_opset20, a Gelu op)
  silu       Linear(20, 16), nn.SiLU(), Linear(16, 12), F.silu, Linear(12, 10)
  mish       Linear(20, 16), nn.Mish(), Linear(16, 12), nn.Hardswish(), Linear(12, 12),
             nn.Hardsigmoid(), Linear(12, 10), nn.ReLU6() (torch spells Mish out at opset 18 too)
  conv1d     on [N, 3, 30]: Conv1d(3, 8, 5, stride=2, padding=2), ReLU, MaxPool1d(3, 2, 1),
             Conv1d(8, 8, 3, padding=2, dilation=2, groups=2), ReLU, AvgPool1d(2), flatten,
             Linear(32, 10)
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "tests", "fixtures", "onnx_import")


class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Residual(nn.Module):
    """strata's Residual: body(x) + shortcut(x), the identity when there is no shortcut."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        s = x if self.shortcut is None else self.shortcut(x)
        return self.body(x) + s


def conv_bn(cin, cout, stride=1):
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)]


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.block1 = Residual(nn.Sequential(*conv_bn(8, 8), nn.ReLU(), *conv_bn(8, 8)))
        self.block2 = Residual(
            nn.Sequential(*conv_bn(8, 16, stride=2), nn.ReLU(), *conv_bn(16, 16)),
            nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)),
        )
        self.pool2 = nn.AvgPool2d(2, padding=1, count_include_pad=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.bn_head = nn.BatchNorm1d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.block1(x))
        x = F.relu(self.block2(x))
        x = self.pool2(x)
        return self.fc(self.bn_head(self.flatten(self.pool(x))))


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(28, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1, :])


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


class GeluNet(nn.Module):
    """Both GELUs: opset 17 spells them out (Erf; Tanh and a cube), opset 20 has a Gelu op."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.act1 = nn.GELU()
        self.fc2 = nn.Linear(16, 12)
        self.act2 = nn.GELU(approximate="tanh")
        self.fc3 = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class SiluNet(nn.Module):
    """SiLU as a module and as a function: both export as Mul(x, Sigmoid(x)) at opset 17."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.act1 = nn.SiLU()
        self.fc2 = nn.Linear(16, 12)
        self.fc3 = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc3(F.silu(self.fc2(self.act1(self.fc1(x)))))


class MishNet(nn.Module):
    """Mish (exported as Mul(x, Tanh(Softplus(x)))), Hardswish, Hardsigmoid (ONNX's HardSwish,
    HardSigmoid) and ReLU6 (Clip(x, 0, 6))."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.act1 = nn.Mish()
        self.fc2 = nn.Linear(16, 12)
        self.act2 = nn.Hardswish()
        self.fc3 = nn.Linear(12, 12)
        self.act3 = nn.Hardsigmoid()
        self.fc4 = nn.Linear(12, 10)
        self.act4 = nn.ReLU6()

    def forward(self, x):
        x = self.act2(self.fc2(self.act1(self.fc1(x))))
        return self.act4(self.fc4(self.act3(self.fc3(x))))


class Conv1dNet(nn.Module):
    """A 1-d CNN on [N, 3, 30]: strided and padded, grouped and dilated, 1-d pools, flattened."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 8, 5, stride=2, padding=2)
        self.pool1 = nn.MaxPool1d(3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.pool2 = nn.AvgPool1d(2)
        self.fc = nn.Linear(8 * 4, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


def randomise_batch_norms(model):
    """Random statistics and affine parameters (positive variances) in place of 0 and 1."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.weight.data = 1 + 0.3 * torch.randn(c, generator=g)
            m.bias.data = 0.3 * torch.randn(c, generator=g)
            m.running_mean = 0.3 * torch.randn(c, generator=g)
            m.running_var = torch.exp(0.3 * torch.randn(c, generator=g))


def export(name, model, x, opset=17):
    model.eval()
    path = os.path.join(OUT, f"{name}.onnx")
    torch.onnx.export(
        model,
        (x,),
        path,
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    with torch.no_grad():
        y = model(x)
    meta = {"torch_version": torch.__version__, "generator": "tools/make_onnx_import_fixtures.py"}
    save_file({"input": x.contiguous(), "output": y.contiguous()}, os.path.join(OUT, f"{name}.io.safetensors"), meta)
    print(f"{name}: {os.path.getsize(path)} bytes, output {tuple(y.shape)}")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name, make, shape, opset in [
        ("simple_nn", SimpleNN, (3, 1, 28, 28), 17),
        ("resnet", ResNet, (3, 1, 28, 28), 17),
        ("lstm", LSTMNet, (3, 28, 28), 17),
        ("gru", GRUNet, (3, 28, 28), 17),
        ("gelu", GeluNet, (3, 20), 17),
        ("gelu_opset20", GeluNet, (3, 20), 20),
        ("silu", SiluNet, (3, 20), 17),
        ("conv1d", Conv1dNet, (3, 3, 30), 17),
        ("mish", MishNet, (3, 20), 17),
    ]:
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        torch.manual_seed(0)
        model = make()
        randomise_batch_norms(model)
        x = torch.randn(*shape)
        export(name, model, x, opset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
