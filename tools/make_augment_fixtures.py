#!/usr/bin/env python3
"""Generate torchvision reference values for strata's augmentation parity test.

Writes ``crates/data/tests/fixtures/augment_parity.safetensors`` (via
``safetensors.torch.save_file``), read by ``crates/data/tests/augment.rs``
(``torchvision_parity``), so the Rust tests need no PyTorch at test time.  Regenerate with::

    python3 tools/make_augment_fixtures.py

Needs ``torch`` and ``torchvision`` (``pip install torchvision``; the CPU wheels of the
PyTorch index work too).  Only the deterministic parts are compared: the transforms applied
with explicit parameters.  The random draws cannot match, because strata draws from its own
counter-based generator (``Augment::generator(seed, epoch, index)``), not torch's.

Settings::

    torch.set_num_threads(1)
    torch.manual_seed(0)
    img_a = torch.rand(3, 7, 9)      # three channels, odd non-square sides
    img_b = torch.rand(1, 28, 28)    # an MNIST-sized image
    img_c = torch.rand(1, 4, 5)      # even height

Keys (all float32 images ``[C, H, W]``; parameters float64; ``image`` indexes
``IMAGES = ["img_a", "img_b", "img_c"]``, each stored once as ``image.<name>``)::

    flip.<img>.y                   y = F.hflip(x)                       for img_a, img_b, img_c

    crop.<k>.y, crop.<k>.params = [image, h, w, left, top, right, bottom, mode, fill, top_at, left_at]
        y = F.crop(F.pad(x, [left, top, right, bottom], fill=fill, padding_mode=MODES[mode]),
                   top_at, left_at, h, w)
        MODES = ["constant", "edge", "reflect", "symmetric"]   (strata's PadMode::ALL order)

    affine.<k>.y, affine.<k>.params = [image, angle, tx, ty, scale]
        y = F.affine(x, angle=angle, translate=[tx, ty], scale=scale, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR)          # fill=None: zeros

``F.affine`` with ``fill=None`` samples with ``grid_sample``'s zero padding, which is strata's
``RandomAffine`` with fill 0 exactly (``RandomAffine(fill=0)`` in torchvision weights its border
pixels once more; see ``crates/data/src/augment/affine.rs``).  The metadata holds
``torch_version``, ``torchvision_version`` and ``generator``.
"""

import os

import torch
import torchvision
import torchvision.transforms.functional as F
from safetensors.torch import save_file

MODES = ["constant", "edge", "reflect", "symmetric"]

# name: (image, (h, w), (left, top, right, bottom), mode, fill, top_at, left_at)
CROPS = {
    "mnist_pad4": ("img_b", (28, 28), (4, 4, 4, 4), "constant", 0.0, 3, 6),
    "edge": ("img_a", (5, 6), (2, 2, 2, 2), "edge", 0.0, 1, 4),
    "reflect_uneven": ("img_a", (7, 9), (1, 2, 3, 1), "reflect", 0.0, 0, 3),
    "symmetric": ("img_a", (4, 4), (3, 3, 3, 3), "symmetric", 0.0, 5, 0),
    "fill_half": ("img_c", (6, 5), (0, 1, 2, 3), "constant", 0.5, 2, 2),
    "no_padding": ("img_c", (4, 5), (0, 0, 0, 0), "constant", 0.0, 0, 0),
    "corner": ("img_b", (20, 24), (4, 4, 4, 4), "reflect", 0.0, 16, 12),
}

# name: (image, angle, (tx, ty), scale)
AFFINES = {
    "mnist_small": ("img_b", 10.0, (2, -3), 1.1),
    "mnist_shrink": ("img_b", -7.5, (0, 0), 0.9),
    "mnist_90": ("img_b", 90.0, (0, 0), 1.0),
    "mnist_45_grow": ("img_b", 45.0, (1, 1), 1.3),
    "mnist_identity": ("img_b", 0.0, (0, 0), 1.0),
    "mnist_180": ("img_b", 180.0, (-2, 4), 0.75),
    "rgb_30": ("img_a", 30.0, (1, -1), 1.2),
    "rgb_minus_90": ("img_a", -90.0, (0, 0), 1.0),
    "rgb_fractional": ("img_a", 12.3, (0.5, -1.5), 0.8),
    "even_33": ("img_c", 33.0, (0, 0), 1.0),
}


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = {
        "img_a": torch.rand(3, 7, 9),
        "img_b": torch.rand(1, 28, 28),
        "img_c": torch.rand(1, 4, 5),
    }
    names = list(images)
    out = {f"image.{name}": x for name, x in images.items()}
    for name, x in images.items():
        out[f"flip.{name}.y"] = F.hflip(x)
    for key, (img, (h, w), (l, t, r, b), mode, fill, top, left) in CROPS.items():
        x = images[img]
        padded = F.pad(x, [l, t, r, b], fill=fill, padding_mode=mode)
        out[f"crop.{key}.y"] = F.crop(padded, top, left, h, w).contiguous()
        out[f"crop.{key}.params"] = torch.tensor(
            [names.index(img), h, w, l, t, r, b, MODES.index(mode), fill, top, left], dtype=torch.float64
        )
    for key, (img, angle, (tx, ty), scale) in AFFINES.items():
        x = images[img]
        y = F.affine(
            x,
            angle=angle,
            translate=[tx, ty],
            scale=scale,
            shear=[0.0, 0.0],
            interpolation=F.InterpolationMode.BILINEAR,
        )
        out[f"affine.{key}.y"] = y.contiguous()
        out[f"affine.{key}.params"] = torch.tensor([names.index(img), angle, tx, ty, scale], dtype=torch.float64)
    path = os.path.join(
        os.path.dirname(__file__), "..", "crates", "data", "tests", "fixtures", "augment_parity.safetensors"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "generator": "tools/make_augment_fixtures.py",
    }
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {os.path.normpath(path)}: {len(out)} tensors")
    for k in sorted(out):
        print(f"  {k:36} {list(out[k].shape)}")


if __name__ == "__main__":
    main()
