#!/usr/bin/env python3
"""Full-size parity check of the ViT-B/16: timm's `vit_base_patch16_224` (random init, LayerNorm
affines, class token and position embedding randomised by make_vit_fixtures.randomize), saved as
safetensors, run by SwiftTTA's `tta predict --model auto` on random 224×224 images.

1. Source logits of a batch against timm's (mean/std 0.5 normalisation applied by both sides).
2. TENT through the CLI (`--method tent --optimizer sgd --lr 0.01`, batches of half the images): the
   second batch's logits follow one update of every LayerNorm γ/β with the gradient of the first
   batch's mean entropy, so they check those gradients at full size. Reported both as the error of the
   logits and as the error of their change from the source logits (the update's own effect).

Needs torch, safetensors and timm; run `swift build -c release` first.
Usage: python3 scripts/check_vit_b16.py [--batch 4] [--threads 2] [--tta .build/release/tta]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import timm
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_vit_fixtures import entropy, layer_norm_affine_only, normalized, randomize  # noqa: E402


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4, help="images; TENT adapts on batches of half of them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "tta"))
    args = ap.parse_args()
    assert args.batch >= 2 and args.batch % 2 == 0, "--batch must be even"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = randomize(timm.create_model("vit_base_patch16_224", pretrained=False), 0)
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    half = args.batch // 2
    ok = True
    with tempfile.TemporaryDirectory() as d:
        weights, xin, out = (os.path.join(d, n) for n in ["vit_b16.safetensors", "x.npy", "y.npy"])
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        np.save(xin, x.numpy())
        with torch.no_grad():
            t0 = time.perf_counter(); ref = model(normalized(x)); t_torch = time.perf_counter() - t0

        def tta(*extra):
            t0 = time.perf_counter()
            subprocess.run([args.tta, "predict", "--model", "auto", "--weights", weights, "--input", xin, "--output", out,
                            "--threads", str(args.threads), "--quiet", *extra], check=True)
            return torch.from_numpy(np.load(out)), time.perf_counter() - t0

        y, t_swift = tta("--batch-size", str(args.batch))
        err = rel(y, ref)
        ok &= err <= 1e-4
        print(f"ViT-B/16 (timm vit_base_patch16_224, random init), batch {args.batch}, {args.threads} threads")
        print(f"  source logits: max |swift - torch| / max |torch| = {err:.2e}  ({'OK' if err <= 1e-4 else 'FAIL'}: bound 1e-4)")
        print(f"  PyTorch forward: {t_torch:.2f} s; `tta predict` wall time incl. loading: {t_swift:.2f} s")

        opt = torch.optim.SGD(layer_norm_affine_only(model), lr=0.01, momentum=0.9, dampening=0, weight_decay=0.0, nesterov=True)
        tent_ref = []
        for i in range(2):
            logits = model(normalized(x[i * half:(i + 1) * half]))
            entropy(logits).mean(0).backward()
            opt.step(); opt.zero_grad()
            tent_ref.append(logits.detach())
        tent_ref = torch.cat(tent_ref)
        y, t_swift = tta("--batch-size", str(half), "--method", "tent", "--optimizer", "sgd", "--lr", "0.01")
        err_logits = rel(y[half:], tent_ref[half:])
        err_change = rel(y[half:] - ref[half:], tent_ref[half:] - ref[half:])
        change = ((tent_ref[half:] - ref[half:]).abs().max() / ref[half:].abs().max()).item()
        ok &= err_logits <= 1e-4 and err_change <= 1e-2
        print(f"  TENT, 2 batches of {half}: second batch's logits (after one LayerNorm update), error {err_logits:.2e} "
              f"({'OK' if err_logits <= 1e-4 else 'FAIL'}: bound 1e-4)")
        print(f"    the update changed them by {change:.2e} (relative); error of that change {err_change:.2e} "
              f"({'OK' if err_change <= 1e-2 else 'FAIL'}: bound 1e-2); `tta predict --method tent` {t_swift:.2f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
