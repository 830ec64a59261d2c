#!/usr/bin/env python3
"""Full-size parity check of torchvision's ResNet-50 in SwiftTTA, through `tta predict`.

A randomly initialised `torchvision.models.resnet50()` (no pretrained weights can be downloaded here;
BN affine parameters and statistics randomised) is saved by PyTorch as safetensors, then
1. `source`: SwiftTTA's logits on a batch must equal PyTorch's (eval BN), to 1e-4 relative;
2. `tent` (BN on batch statistics, SGD on every BN weight/bias, lr --lr, no momentum): SwiftTTA
   predicts two batches while adapting. Batch 1's logits are the pre-update forward (batch statistics);
   batch 2's come after one SGD step on the mean-entropy gradient of batch 1, so they match PyTorch
   only if the norm-affine gradients of the whole network match. The script prints how far the step
   moved batch 2's logits, so the agreement is read against the size of the effect.
ImageNet normalisation is applied by PyTorch before the model and by SwiftTTA inside it (its default
for torchvision ResNets). Also prints wall times and images/s of both.

Needs torch, torchvision, safetensors; run `swift build -c release` first.
Usage: python3 scripts/check_resnet50.py [--batch 16] [--threads 2] [--lr 0.1] [--tta .build/release/tta]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import configure, randomize_bn  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--tta", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "tta"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    randomize_bn(model, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    b = args.batch
    x = torch.rand(2 * b, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    ok = True
    with tempfile.TemporaryDirectory() as d:
        weights, xs, out = os.path.join(d, "r50.safetensors"), os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        save_file(state, weights)
        np.save(xs, x.numpy())

        def swift(method, extra=()):
            t0 = time.perf_counter()
            r = subprocess.run([args.tta, "predict", "--model", "auto", "--weights", weights, "--input", xs, "--output", out,
                                "--batch-size", str(b), "--threads", str(args.threads), "--method", method, "--quiet", *extra],
                               check=True, capture_output=True, text=True)
            return torch.from_numpy(np.load(out)), time.perf_counter() - t0, r.stdout.strip()

        # 1. source
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter(); ref = model((x - MEAN) / STD); t_torch = time.perf_counter() - t0
        y, t_swift, msg = swift("source")
        err = rel(y, ref)
        ok &= err <= 1e-4
        print(f"ResNet-50 (random init, randomised BN), {2 * b} images in batches of {b}, {args.threads} threads")
        print(f"source: max |swift - torch| / max |torch| = {err:.2e} ({'OK' if err <= 1e-4 else 'FAIL'}: bound 1e-4); "
              f"argmax agreement {(y.argmax(1) == ref.argmax(1)).float().mean().item() * 100:.1f}%")
        print(f"  PyTorch eval forward {t_torch:.2f} s; tta predict: {msg} (wall {t_swift:.2f} s incl. loading)")

        # 2. tent, one SGD step between the batches
        m = torchvision.models.resnet50()
        m.load_state_dict(state)
        configure(m, "train_untracked")
        params = []
        for p in m.parameters():
            p.requires_grad_(False)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.requires_grad_(True); mod.bias.requires_grad_(True)
                params += [mod.weight, mod.bias]
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0)
        t0 = time.perf_counter()
        logits = []
        for i in range(2):
            z = m((x[i * b:(i + 1) * b] - MEAN) / STD)
            logits.append(z.detach())
            loss = -(z.softmax(1) * z.log_softmax(1)).sum(1).mean(0)
            opt.zero_grad(); loss.backward(); opt.step()
        t_torch = time.perf_counter() - t0
        fresh = torchvision.models.resnet50()
        fresh.load_state_dict(state)
        configure(fresh, "train_untracked")
        with torch.no_grad():
            no_step = fresh((x[b:] - MEAN) / STD)
        y, t_swift, msg = swift("tent", ["--optimizer", "sgd", "--lr", str(args.lr), "--momentum", "0"])
        e1, e2, effect = rel(y[:b], logits[0]), rel(y[b:], logits[1]), rel(no_step, logits[1])
        ok &= e1 <= 1e-4 and e2 <= 1e-3 and e2 < 0.05 * effect
        print(f"tent: batch 1 (pre-update) error {e1:.2e}; batch 2 (after one step) error {e2:.2e}, "
              f"while the step moved batch 2's logits by {effect:.2e} ({'OK' if ok else 'FAIL'})")
        print(f"  PyTorch 2 tent steps {t_torch:.2f} s; tta predict: {msg} (wall {t_swift:.2f} s incl. loading)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
