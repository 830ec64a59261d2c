#!/usr/bin/env python3
"""Writes a tiny ImageNet-C-layout folder and what torchvision reads from it (Tests/Fixtures/imagenetc/).

`imagenetc_folder()`: Tests/Fixtures/imagenetc/ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG with
2 corruptions x severities {1, 5} x 3 classes x 2 images of 12x10 pixels (one class's images are
greyscale JPEGs), saved by Pillow at quality 85 as hendrycks' make_imagenet_c.py does, plus list.txt
(a `<wnid>/<file>` list in a chosen order). `expected.safetensors` holds, per domain, the tensors
torchvision's `ImageFolder(root, transform=ToTensor())` yields (the reference's ImageNet-C pipeline:
pil_loader -> convert("RGB") -> ToTensor), in its sample order, and its targets.
Run from the repository root: python3 scripts/make_imagenetc_fixtures.py
"""
import os
import shutil

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "imagenetc")
CORRUPTIONS = ["gaussian_noise", "fog"]
SEVERITIES = [1, 5]
CLASSES = ["n01440764", "n02102040", "n09468604"]


def imagenetc_folder():
    root = os.path.join(OUT, "ImageNet-C")
    shutil.rmtree(OUT, ignore_errors=True)
    rng = np.random.default_rng(51)
    numbers = {c: [int(n) for n in rng.choice(50000, 2, replace=False) + 1] for c in CLASSES}
    yy, xx = np.mgrid[0:10, 0:12]
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            for k, wnid in enumerate(CLASSES):
                d = os.path.join(root, corruption, str(severity), wnid)
                os.makedirs(d)
                for n in numbers[wnid]:
                    base = np.stack([xx * 20 + 10 * k, yy * 25, (xx + yy) * 10], -1).astype(np.float64)
                    img = np.clip(base + rng.normal(0, 8 * severity, base.shape), 0, 255).astype(np.uint8)
                    im = Image.fromarray(img)
                    if wnid == CLASSES[1]:
                        im = im.convert("L")
                    im.save(os.path.join(d, f"ILSVRC2012_val_{n:08d}.JPEG"), quality=85, optimize=True)
    listed = [f"{CLASSES[2]}/ILSVRC2012_val_{numbers[CLASSES[2]][1]:08d}.JPEG",
              f"{CLASSES[0]}/ILSVRC2012_val_{numbers[CLASSES[0]][0]:08d}.JPEG",
              f"{CLASSES[1]}/ILSVRC2012_val_{numbers[CLASSES[1]][1]:08d}.JPEG"]
    with open(os.path.join(OUT, "list.txt"), "w") as f:
        f.write("\n".join(listed) + "\n")
    t = {}
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            ds = torchvision.datasets.ImageFolder(os.path.join(root, corruption, str(severity)),
                                                  transform=torchvision.transforms.ToTensor())
            t[f"{corruption}.{severity}.x"] = torch.stack([ds[i][0] for i in range(len(ds))])
            t["labels"] = torch.tensor(ds.targets, dtype=torch.int64)
            rel = [os.path.relpath(p, ds.root) for p, _ in ds.samples]
            t[f"{corruption}.{severity}.list_x"] = torch.stack([ds[rel.index(p)][0] for p in listed])
            t["list_labels"] = torch.tensor([ds.class_to_idx[p.split("/")[0]] for p in listed], dtype=torch.int64)
    save_file(t, os.path.join(OUT, "expected.safetensors"), metadata={"generator": "scripts/make_imagenetc_fixtures.py"})
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    imagenetc_folder()
