#!/usr/bin/env python3
"""A small ImageNet-C-layout folder from real photos, and a random ResNet-50, for a timing run.

Writes <out>/ImageNet-C/<corruption>/5/<class>/<file>.JPEG: 4 classes (scikit-image's sample photos
astronaut, chelsea, coffee, rocket), `--per-class` random 224x224 crops of each (flipped at random),
corrupted with `imagecorruptions` (the ImageNet-C reference code) at severity 5 and saved as JPEG
quality 85 as hendrycks' make_imagenet_c.py does; and <out>/resnet50_random.safetensors, torchvision's
resnet50 (random init, BN statistics randomised, a 4-class fc). No pretrained weights are involved:
accuracies from it are meaningless; the run measures speed and exercises the pipeline.

Needs numpy, Pillow, scikit-image, torch, torchvision and imagecorruptions (pip install setuptools
imagecorruptions). Not used by the tests.
Usage: python3 scripts/make_imagenetc_demo.py --out /tmp/inc-demo [--per-class 16]
"""
import argparse
import os
import sys

import numpy as np
import skimage.data
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

if not hasattr(np, "float_"):
    np.float_ = np.float64  # imagecorruptions' fog uses the NumPy 1 alias; the maths is unchanged
from imagecorruptions import corrupt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import randomize_bn  # noqa: E402

PHOTOS = {"astronaut": skimage.data.astronaut, "chelsea": skimage.data.chelsea, "coffee": skimage.data.coffee,
          "rocket": skimage.data.rocket}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-class", type=int, default=16)
    ap.add_argument("--corruptions", default="gaussian_noise,fog,jpeg_compression")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    crops = {}
    for name, load in PHOTOS.items():
        img = Image.fromarray(load()).convert("RGB")
        w, h = img.size
        crops[name] = []
        for _ in range(args.per_class):
            s = int(min(w, h) * rng.uniform(0.5, 1.0))
            x0, y0 = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
            c = img.crop((x0, y0, x0 + s, y0 + s)).resize((224, 224), Image.BILINEAR)
            crops[name].append(c.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else c)
    for corruption in args.corruptions.split(","):
        np.random.seed(1)
        for name, images in crops.items():
            d = os.path.join(args.out, "ImageNet-C", corruption, "5", name)
            os.makedirs(d, exist_ok=True)
            for i, im in enumerate(images):
                x = corrupt(np.asarray(im), corruption_name=corruption, severity=5)
                Image.fromarray(np.uint8(x)).save(os.path.join(d, f"{name}_{i:03d}.JPEG"), quality=85, optimize=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=len(PHOTOS))
    randomize_bn(model, 1)
    save_file(model.state_dict(), os.path.join(args.out, "resnet50_random.safetensors"))
    print(f"wrote {args.out}: {len(PHOTOS)} classes x {args.per_class} images x {len(args.corruptions.split(','))} corruptions")


if __name__ == "__main__":
    main()
