#!/usr/bin/env python3
"""A CIFAR-10-C-layout benchmark and a WideResNet-28-10 checkpoint, for timing continual runs end to end.

    python3 scripts/make_timing_benchmark.py --out /tmp/c10c-timing --per-domain 200

writes <out>/CIFAR-10-C/<corruption>.npy (5*K, 32, 32, 3) uint8 for the 15 standard corruptions, and
labels.npy (5*K,), as CIFAR-10-C is distributed, and <out>/wrn28_10.safetensors: RobustBench's
WideResNet-28-10 (the reference repo's own class, PyTorch state-dict names, 10 classes) with its seeded
Kaiming initialisation. Images are the embedded Fashion-MNIST-C images of the same corruption
(data/fashion-mnist-c, 32x32 grey), repeated over the three channels and over the 200 rows it has per
severity. Error rates on this are meaningless (untrained weights); its point is the time a run takes:
`tta run` and scripts/reference_compare.py read it the same way. Not used by the tests.
"""
import argparse
import importlib.util
import os

import numpy as np
import torch
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
               "pixelate", "jpeg_compression"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-domain", type=int, default=200, help="images per corruption and severity (K)")
    p.add_argument("--reference-dir", default="/work/refs/test-time-adaptation")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    k = args.per_domain
    src_dir = os.path.join(REPO, "data", "fashion-mnist-c", "FMNIST-C")
    dst = os.path.join(args.out, "CIFAR-10-C")
    os.makedirs(dst, exist_ok=True)
    src_labels = np.load(os.path.join(src_dir, "labels.npy"))
    per = len(src_labels) // 5
    rows = np.arange(k) % per
    labels = np.concatenate([src_labels[s * per + rows] for s in range(5)]).astype(np.int64)
    np.save(os.path.join(dst, "labels.npy"), labels)
    for c in CORRUPTIONS:
        x = np.load(os.path.join(src_dir, f"{c}.npy"))          # (5*per, 32, 32, 1)
        blocks = [x[s * per + rows] for s in range(5)]
        np.save(os.path.join(dst, f"{c}.npy"), np.repeat(np.concatenate(blocks), 3, axis=3))

    path = os.path.join(args.reference_dir, "classification", "robustbench", "model_zoo", "architectures", "wide_resnet.py")
    spec = importlib.util.spec_from_file_location("reference_wide_resnet", path)
    wrn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrn)
    torch.manual_seed(args.seed)
    model = wrn.WideResNet(depth=28, num_classes=10, widen_factor=10)
    save_file({n: t.contiguous() for n, t in model.state_dict().items()}, os.path.join(args.out, "wrn28_10.safetensors"))
    print(f"{dst}: 15 corruptions x 5 severities x {k} images; {args.out}/wrn28_10.safetensors")


if __name__ == "__main__":
    main()
