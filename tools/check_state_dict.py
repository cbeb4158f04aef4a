#!/usr/bin/env python3
"""Check strata <-> PyTorch state_dict interchange for the SimpleNN model.

Usage::

    python3 tools/check_state_dict.py load STRATA_FILE.safetensors
        Strict-load a safetensors file written by strata into the PyTorch
        SimpleNN below:
            model.load_state_dict(safetensors.torch.load_file(path), strict=True)
        then run a forward on a fixed input (torch.manual_seed(0);
        x = torch.randn(4, 784)).  Prints "OK: strict load of N tensors, keys ..."
        and exits 0, or prints the error and exits 1.

    python3 tools/check_state_dict.py save OUT.safetensors [--seed S]   (S=1 default)
        torch.manual_seed(S); model = SimpleNN()
        safetensors.torch.save_file(model.state_dict(), OUT, metadata=...)
        torch.manual_seed(S + 1); x = torch.randn(4, 784)
        with torch.no_grad(): logits = model(x)
        save_file({"input": x, "logits": logits}, OUT + ".expected.safetensors")

The committed fixture crates/nn/tests/fixtures/torch_simple_nn_state_dict.safetensors
(+ .expected.safetensors) was made with:
    python3 tools/check_state_dict.py save \
        crates/nn/tests/fixtures/torch_simple_nn_state_dict.safetensors --seed 1
"""

import argparse
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simple_nn import SimpleNN  # noqa: E402


def meta():
    return {"torch_version": torch.__version__, "generator": "tools/check_state_dict.py"}


def cmd_load(path):
    try:
        sd = load_file(path)
        model = SimpleNN()
        model.load_state_dict(sd, strict=True)
        torch.manual_seed(0)
        x = torch.randn(4, 784)
        with torch.no_grad():
            logits = model(x)
        if tuple(logits.shape) != (4, 10):
            raise RuntimeError(f"unexpected logits shape {tuple(logits.shape)}")
        if not torch.isfinite(logits).all():
            raise RuntimeError("non-finite logits after load")
    except Exception as e:  # noqa: BLE001 - report any failure
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1
    keys = ", ".join(f"{k}{list(v.shape)}:{str(v.dtype).replace('torch.', '')}"
                     for k, v in sd.items())
    print(f"OK: strict load of {len(sd)} tensors, keys {keys}")
    print(f"    forward on torch.manual_seed(0); torch.randn(4,784): "
          f"logits[0,:3] = {logits[0, :3].tolist()}, sum = {logits.sum().item():.6g}")
    return 0


def cmd_save(out, seed):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = SimpleNN()
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, out, metadata=meta())
    torch.manual_seed(seed + 1)
    x = torch.randn(4, 784)
    with torch.no_grad():
        logits = model(x)
    exp = out + ".expected.safetensors"
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, exp,
              metadata=dict(meta(), seed=str(seed)))
    print(f"wrote {out} ({len(sd)} tensors: "
          + ", ".join(f"{k}{list(v.shape)}" for k, v in sd.items()) + ")")
    print(f"wrote {exp} (input{list(x.shape)}, logits{list(logits.shape)}), seed {seed}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p_load = sub.add_parser("load", help="strict-load a strata-written state_dict")
    p_load.add_argument("path")
    p_save = sub.add_parser("save", help="write a torch SimpleNN state_dict + expected logits")
    p_save.add_argument("out")
    p_save.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.mode == "load":
        return cmd_load(args.path)
    return cmd_save(args.out, args.seed)


if __name__ == "__main__":
    sys.exit(main())
