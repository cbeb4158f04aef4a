#!/usr/bin/env python3
"""PyTorch checkpoint (``torch.save``) fixtures for strata's restricted unpickler.

Writes ``crates/nn/tests/fixtures/torch_pt/`` (read by ``crates/nn/tests/torch_file.rs`` and
``crates/cli/tests/init.rs``):

``simple_nn.pt``
    ``torch.manual_seed(1); torch.save(SimpleNN().state_dict(), path)``: the 784-128-64-10 MLP
    of ``tools/simple_nn.py``. Its reference values are the committed
    ``../torch_simple_nn_state_dict.safetensors`` (``tools/check_state_dict.py save --seed 1``
    builds the same model); this script asserts they are equal before writing.
``views.pt`` and ``views.safetensors``
    A dict of tensors that are not plain contiguous storages: a transpose, a slice with a
    storage offset, a strided slice, an ``expand`` (stride 0), two tensors viewing one storage
    (and a third viewing it with another offset), a 0-d tensor, an empty tensor, and the element
    types float32/64, float16, bfloat16, int64/32/16/8, uint8, bool and uint16 (which
    ``torch.save`` writes through ``_rebuild_tensor_v3`` and an untyped storage).
    ``views.safetensors`` holds ``t.contiguous().clone()`` of each: the reference.
``views_p4_deflate.pt``
    The same dict saved with ``pickle_protocol=4`` (FRAME, SHORT_BINUNICODE, MEMOIZE,
    STACK_GLOBAL) and then re-zipped with every record deflated (torch writes them stored).
``nested.pt``
    A training checkpoint: ``{'epoch': 3, 'state_dict': <a Linear(3, 2)'s state_dict>,
    'optimizer': <SGD-with-momentum state_dict after one step>, 'best_acc': 0.5,
    'note': 'x', 'flags': [True, None], 'pair': (1, 2.5)}``; reference ``nested.safetensors``
    holds the ``state_dict`` entry.
``legacy.pt``
    ``torch.save(Linear(2, 2).state_dict(), path, _use_new_zipfile_serialization=False)``: the
    pre-1.6 format, which strata refuses with a message to re-save it.
``malicious.pt``, ``malicious.pkl``, ``malicious_eval.pkl``
    Files that run a command when unpickled by Python: ``torch.save`` of an object whose
    ``__reduce__`` returns ``(os.system, ('touch /tmp/strata-torch-convert-pwned',))``
    (``data.pkl`` asks for the global ``posix.system``), the same object as a bare protocol-2
    pickle, and a protocol-4 pickle calling ``builtins.eval`` via STACK_GLOBAL. The script
    proves all three are live: it loads them with Python's ``pickle`` (``torch.load(...,
    weights_only=False)`` for the ``.pt``) and checks that the marker file appeared (then
    removes it). strata's tests check it never does.

    python3 tools/make_pt_fixtures.py
"""

import io
import os
import pickle
import sys
import zipfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from simple_nn import SimpleNN  # noqa: E402

REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "crates", "nn", "tests", "fixtures", "torch_pt")
MARKER = "/tmp/strata-torch-convert-pwned"
META = {"torch_version": torch.__version__, "generator": "tools/make_pt_fixtures.py"}


def path(name):
    return os.path.join(OUT, name)


def views():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 3, generator=g)
    wide = torch.randn(5, 6, generator=g, dtype=torch.float64)
    shared = torch.randn(10, generator=g)
    return {
        "transposed": base.t(),  # [3, 4], strides (1, 3)
        "sliced": wide[1:4, 2:5],  # storage offset 8, strides (6, 1)
        "stepped": wide[::2, ::3],  # strides (12, 3)
        "expanded": torch.randn(1, 3, generator=g).expand(4, 3),  # stride 0
        "shared.a": shared[:6].view(2, 3),  # one storage …
        "shared.b": shared[4:],  # … viewed by three tensors
        "shared.c": shared,
        "scalar": torch.tensor(42, dtype=torch.int64),  # 0-d, like num_batches_tracked
        "empty": torch.zeros(0, 3),
        "half": torch.randn(2, 3, generator=g).half(),
        "bfloat": torch.randn(3, 2, generator=g).bfloat16().t(),
        "int32": torch.arange(-3, 3, dtype=torch.int32).view(2, 3),
        "int16": torch.arange(-4, 4, dtype=torch.int16)[1::2],
        "int8": torch.arange(-5, 5, dtype=torch.int8),
        "uint8": torch.arange(250, 256, dtype=torch.int64).to(torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]).t(),
        "uint16": torch.tensor([0, 1, 65535], dtype=torch.int32).to(torch.uint16),
    }


def save_reference(tensors, name):
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, path(name), metadata=META)


def deflated(src, dst):
    """The zip `src` with every record deflated (torch.save stores them)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


class Pwn:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))


def live(data, name):
    """Python's pickle (or torch.load without weights_only) runs the command: the fixture is a
    real attack."""
    if os.path.exists(MARKER):
        os.remove(MARKER)
    if name.endswith(".pt"):
        torch.load(data, weights_only=False)
    else:
        pickle.loads(data)
    assert os.path.exists(MARKER), f"{name} did not run its command"
    os.remove(MARKER)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)

    torch.manual_seed(1)
    model = SimpleNN()
    torch.save(model.state_dict(), path("simple_nn.pt"))
    ref = load_file(os.path.join(OUT, "..", "torch_simple_nn_state_dict.safetensors"))
    loaded = torch.load(path("simple_nn.pt"), weights_only=True)
    assert list(ref) == list(loaded) or sorted(ref) == sorted(loaded)
    for k, v in loaded.items():
        assert torch.equal(v, ref[k]), k

    v = views()
    assert not v["transposed"].is_contiguous() and v["sliced"].storage_offset() == 8
    torch.save(v, path("views.pt"))
    save_reference(v, "views.safetensors")
    buf = io.BytesIO()
    torch.save(v, buf, pickle_protocol=4)
    raw = path("views_p4.tmp")
    with open(raw, "wb") as f:
        f.write(buf.getvalue())
    deflated(raw, path("views_p4_deflate.pt"))
    os.remove(raw)
    for name in ["views.pt", "views_p4_deflate.pt"]:
        # torch's own weights_only unpickler lacks protocol 4's FRAME: our files, so trusted.
        back = torch.load(path(name), weights_only=(name == "views.pt"))
        for k in v:
            assert torch.equal(back[k], v[k]), (name, k)

    torch.manual_seed(3)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = {
        "epoch": 3,
        "state_dict": lin.state_dict(),
        "optimizer": opt.state_dict(),
        "best_acc": 0.5,
        "note": "x",
        "flags": [True, None],
        "pair": (1, 2.5),
    }
    torch.save(ckpt, path("nested.pt"))
    save_reference(dict(lin.state_dict()), "nested.safetensors")

    torch.save(torch.nn.Linear(2, 2).state_dict(), path("legacy.pt"), _use_new_zipfile_serialization=False)

    torch.save({"weight": Pwn()}, path("malicious.pt"))
    live(path("malicious.pt"), "malicious.pt")
    bare = pickle.dumps(Pwn(), protocol=2)
    live(bare, "malicious.pkl")
    with open(path("malicious.pkl"), "wb") as f:
        f.write(bare)

    class Eval:
        def __reduce__(self):
            return (eval, ("__import__('os').system('touch " + MARKER + "')",))

    ev = pickle.dumps(Eval(), protocol=4)
    assert b"\x93" in ev, "expected STACK_GLOBAL"
    live(ev, "malicious_eval.pkl")
    with open(path("malicious_eval.pkl"), "wb") as f:
        f.write(ev)

    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(path(name))} bytes")


if __name__ == "__main__":
    main()
