#!/usr/bin/env python3
"""Full-size parity check: a randomly initialised WRN-28-10 (RobustBench architecture, BN statistics
randomised) saved by PyTorch as safetensors must give PyTorch's logits on a random batch, to 1e-4
relative, when run by SwiftTTA (`tta predict`). Also times one forward of a batch in both.

Needs torch and safetensors; builds nothing itself: run `swift build -c release` first.
Usage: python3 scripts/check_wrn28_10.py [--batch 200] [--threads 2] [--tta .build/release/tta]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import WideResNet, randomize_bn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "tta"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = WideResNet(depth=28, widen_factor=10, num_classes=10)
    randomize_bn(model, 1)
    model.eval()
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory() as d:
        weights = os.path.join(d, "wrn28_10.safetensors")
        save_file(model.state_dict(), weights)
        np.save(os.path.join(d, "x.npy"), x.numpy())
        with torch.no_grad():
            t0 = time.perf_counter(); ref = model(x); t_torch = time.perf_counter() - t0
        out = os.path.join(d, "y.npy")
        t0 = time.perf_counter()
        subprocess.run([args.tta, "predict", "--model", "auto", "--weights", weights, "--input", os.path.join(d, "x.npy"),
                        "--output", out, "--batch-size", str(args.batch), "--threads", str(args.threads)], check=True)
        t_swift = time.perf_counter() - t0
        y = torch.from_numpy(np.load(out))
    err = ((y.double() - ref.double()).abs().max() / ref.double().abs().max()).item()
    print(f"WRN-28-10, batch {args.batch}, {args.threads} threads")
    print(f"  max |swift - torch| / max |torch| = {err:.2e}  ({'OK' if err <= 1e-4 else 'FAIL'}: bound 1e-4)")
    print(f"  argmax agreement: {(y.argmax(1) == ref.argmax(1)).float().mean().item() * 100:.1f}%")
    print(f"  PyTorch forward: {t_torch:.2f} s; SwiftTTA `tta predict` wall time incl. loading: {t_swift:.2f} s")
    sys.exit(0 if err <= 1e-4 else 1)


if __name__ == "__main__":
    main()
