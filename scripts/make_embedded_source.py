#!/usr/bin/env python3
"""Write the embedded benchmark's labelled source data: data/fashion-mnist-source/{images,labels}.npy.

EATA's Fisher term and RMT's prototypes, warm-up and replay read clean labelled images of the source
domain (`--source-data`). For the embedded benchmark that domain is the Fashion-MNIST *training* set
(the one the embedded WideResNet was trained on by scripts/train_embedded_model.py), read from Debian's
`dataset-fashion-mnist` package (MIT licence), never from the test images the benchmark corrupts.

    python3 scripts/make_embedded_source.py [--per-class 200] [--seed 0]

Selection: `--per-class` images of each of the 10 classes, drawn without replacement with numpy's
default_rng(seed) (the same helper as the benchmark's test subset), in seeded shuffled order.
Preprocessing as for the model and the benchmark: 28x28 zero-padded by 2 px per side to 32x32.
Output (NumPy format 1.0, C order), as `--source-data` reads it:
    images.npy  uint8 (N, 32, 32, 1) NHWC, divided by 255 by the reader (inputs in [0, 1])
    labels.npy  uint8 (N,)
Re-running the script reproduces both files byte for byte.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_embedded_benchmark import load_fmnist, pad32, select_test_subset  # noqa: E402

NUM_CLASSES = 10


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(REPO, "data", "fashion-mnist-source"))
    args = ap.parse_args()
    x, y = load_fmnist("train")
    sel = select_test_subset(y, args.seed, per_class=args.per_class)  # the benchmark's class-balanced draw
    images = pad32(x[sel])[:, :, :, None].astype(np.uint8)
    labels = y[sel].astype(np.uint8)
    os.makedirs(args.out, exist_ok=True)
    for name, arr in (("images.npy", images), ("labels.npy", labels)):
        path = os.path.join(args.out, name)
        np.save(path + ".tmp.npy", np.ascontiguousarray(arr))
        os.replace(path + ".tmp.npy", path)
    print(f"wrote {args.out}: images {images.shape} {images.dtype}, labels {labels.shape} "
          f"(per class {np.bincount(labels, minlength=NUM_CLASSES).tolist()})")


if __name__ == "__main__":
    main()
