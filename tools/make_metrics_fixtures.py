#!/usr/bin/env python3
"""Generate scikit-learn (and PyTorch) reference values for strata's classification metrics.

Writes ``crates/nn/tests/fixtures/metrics_parity.safetensors`` (via
``safetensors.torch.save_file``), read by ``crates/nn/tests/metrics.rs``, so the Rust tests need
neither scikit-learn nor PyTorch. Regenerate with::

    pip install scikit-learn        # 1.9.1 made the committed file
    python3 tools/make_metrics_fixtures.py

Cases (each group of keys is ``<case>.*``)::

    torch.manual_seed(0)
    # multi: 7 classes, 300 samples; labels in 0..5 only, so class 5 and 6 never occur;
    # class 5 is never predicted either (left out of the macro averages), class 6 is
    # (precision, recall and F1 0, support 0, counted in the macro averages).
    labels = torch.randint(0, 5, (300,))
    logits = torch.randn(300, 7) * 1.5
    logits[torch.arange(300), labels] += 2.0
    logits[:, 5] = -10.0
    # binary: 2 classes, 50 samples
    labels = torch.randint(0, 2, (50,)); logits = torch.randn(50, 2); logits[arange, labels] += 1.0
    # names: 4 classes, 40 samples, all present, named (one name wider than "weighted avg")
    labels = torch.randint(0, 4, (40,)); logits = torch.randn(40, 4); logits[arange, labels] += 1.0
    names = ["cat", "dog", "a-very-long-class-name", "x"]
    # docs: predicted classes given directly (sklearn's classification_report docstring example)
    y_true = [0, 1, 2, 2, 2]; y_pred = [0, 0, 2, 2, 1]; names = ["class 0", "class 1", "class 2"]

For each case, with ``y_pred = logits.argmax(1)`` where there are logits and ``C`` classes::

    p, r, f1, s = precision_recall_fscore_support(y_true, y_pred, labels=range(C), zero_division=0)
    # <case>.precision, .recall, .f1 (f64 [C]), .support (i64 [C])
    # <case>.averages (f64 [7]): accuracy_score, then precision/recall/f1_score with
    # average="macro" and average="weighted" (labels not given: the classes present)
    # <case>.topk (f64 [len(KS)]) for <case>.topk_k = KS = [1, 2, 3, 5] (those <= C):
    #   top_k_accuracy_score(y_true, logits, k=k, labels=range(C)), asserted equal to
    #   (torch.topk(logits, k).indices == labels[:, None]).any(1).float().mean()
    #   (the logits are random floats: no ties, where the two would differ)
    # metadata "<case>.report": classification_report(y_true, y_pred, target_names=…) with
    #   target_names the present classes' names (or their indices), default digits=2;
    #   "<case>.report4": the same with digits=4; "<case>.names": the names, one per line.

The metadata also holds ``sklearn_version``, ``torch_version`` and ``generator``.
"""

import os
import warnings

import numpy as np
import safetensors
import safetensors.torch
import sklearn
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "nn", "tests", "fixtures", "metrics_parity.safetensors")
KS = [1, 2, 3, 5]


def cases():
    torch.manual_seed(0)
    out = {}
    n = 300
    labels = torch.randint(0, 5, (n,))
    logits = torch.randn(n, 7) * 1.5
    logits[torch.arange(n), labels] += 2.0
    logits[:, 5] = -10.0
    out["multi"] = (labels, logits, None, None)
    n = 50
    labels = torch.randint(0, 2, (n,))
    logits = torch.randn(n, 2)
    logits[torch.arange(n), labels] += 1.0
    out["binary"] = (labels, logits, None, None)
    n = 40
    labels = torch.randint(0, 4, (n,))
    logits = torch.randn(n, 4)
    logits[torch.arange(n), labels] += 1.0
    out["names"] = (labels, logits, None, ["cat", "dog", "a-very-long-class-name", "x"])
    out["docs"] = (torch.tensor([0, 1, 2, 2, 2]), None, torch.tensor([0, 0, 2, 2, 1]), ["class 0", "class 1", "class 2"])
    return out


def main():
    torch.set_num_threads(1)
    tensors, metadata = {}, {}
    for name, (labels, logits, preds, names) in cases().items():
        c = logits.shape[1] if logits is not None else len(names)
        if preds is None:
            preds = logits.argmax(1)
            tensors[f"{name}.logits"] = logits.contiguous()
        else:
            tensors[f"{name}.preds"] = preds
        tensors[f"{name}.labels"] = labels
        y_true, y_pred = labels.numpy(), preds.numpy()
        with warnings.catch_warnings():
            # zero_division=0 is asked for; the macro averages' "ill-defined" warnings are the point.
            warnings.simplefilter("ignore")
            p, r, f1, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(c)), zero_division=0)
            averages = [accuracy_score(y_true, y_pred)]
            for avg in ["macro", "weighted"]:
                averages += [
                    precision_score(y_true, y_pred, average=avg, zero_division=0),
                    recall_score(y_true, y_pred, average=avg, zero_division=0),
                    f1_score(y_true, y_pred, average=avg, zero_division=0),
                ]
            present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
            target = [names[i] if names else str(i) for i in present]
            metadata[f"{name}.report"] = classification_report(y_true, y_pred, target_names=target, zero_division=0)
            metadata[f"{name}.report4"] = classification_report(
                y_true, y_pred, target_names=target, zero_division=0, digits=4
            )
        tensors[f"{name}.precision"] = torch.tensor(p, dtype=torch.float64)
        tensors[f"{name}.recall"] = torch.tensor(r, dtype=torch.float64)
        tensors[f"{name}.f1"] = torch.tensor(f1, dtype=torch.float64)
        tensors[f"{name}.support"] = torch.tensor(s, dtype=torch.int64)
        tensors[f"{name}.averages"] = torch.tensor(averages, dtype=torch.float64)
        if names:
            metadata[f"{name}.names"] = "\n".join(names)
        if logits is not None:
            ks = [k for k in KS if k <= c]
            topk = []
            for k in ks:
                sk = top_k_accuracy_score(y_true, logits.numpy(), k=k, labels=list(range(c))) if c > 2 else None
                th = (torch.topk(logits, k, dim=1).indices == labels[:, None]).any(1).double().mean().item()
                # sklearn's binary form takes one score per sample; the torch value stands alone there.
                assert sk is None or abs(sk - th) < 1e-15, (name, k, sk, th)
                topk.append(th)
            tensors[f"{name}.topk"] = torch.tensor(topk, dtype=torch.float64)
            tensors[f"{name}.topk_k"] = torch.tensor(ks, dtype=torch.int64)
    metadata.update(
        {
            "sklearn_version": sklearn.__version__,
            "torch_version": torch.__version__,
            "generator": "tools/make_metrics_fixtures.py",
        }
    )
    safetensors.torch.save_file(tensors, OUT, metadata=metadata)
    print(
        f"wrote {os.path.normpath(OUT)}: {len(tensors)} tensors "
        f"(scikit-learn {sklearn.__version__}, torch {torch.__version__}, numpy {np.__version__})"
    )
    for k in sorted(tensors):
        print(f"  {k:20s} {str(tensors[k].dtype):14s} {list(tensors[k].shape)}")
    print(metadata["multi.report"])
    print(metadata["names.report"])


if __name__ == "__main__":
    main()
