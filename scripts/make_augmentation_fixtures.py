#!/usr/bin/env python3
"""Writes the torchvision golden fixtures for CoTTA's test-time augmentation (Tests/Fixtures/augment/).

The pipeline is `get_tta_transforms` (KATANA), as used by CoTTA: clip, ColorJitterPro (five colour ops in
a drawn order), edge pad by size/2, RandomAffine (bilinear, fill 0), GaussianBlur (kernel 5), CenterCrop,
RandomHorizontalFlip, additive noise, clip. Here every random draw is fixed by hand (a parameter set in the
same JSON layout as Swift's `CoTTAAugmentationParameters`), and torchvision's functional ops are applied in
the order the transform classes apply them, on float32 tensors, as the real pipeline runs. The additive
noise has std 0 here (the Swift tests check the noise statistically), so the output is the clip of the
flipped crop.

Each case file holds the input, the output and every intermediate stage, so a mismatch can be localised:
  input, clip, jitter0 .. jitter4 (after each colour op, in the drawn order), pad, affine, blur, crop, output
and `__metadata__` with `params` (the JSON parameter set), `matrix` (the inverse affine matrix torchvision
computes, float64) and `function` (the function below that wrote the file).

Run from the repository root:  python3 scripts/make_augmentation_fixtures.py   (needs torch, torchvision
and safetensors; never needed in CI: the outputs are committed).
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms.functional import InterpolationMode, _get_inverse_affine_matrix
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "augment")

# ColorJitterPro's fn_id numbering (the values of `jitterOrder`).
BRIGHTNESS, CONTRAST, SATURATION, HUE, GAMMA = range(5)


def f32(v):
    """torch draws every factor with `uniform_` on a float32 tensor, so real parameters are float32 values."""
    return float(np.float32(v))


def params(order, brightness, contrast, saturation, hue, gamma, angle, tx, ty, scale, sigma, flip):
    return {
        "jitterOrder": list(order),
        "brightness": f32(brightness), "contrast": f32(contrast), "saturation": f32(saturation),
        "hue": f32(hue), "gamma": f32(gamma),
        "angle": f32(angle), "translateX": int(tx), "translateY": int(ty), "scale": f32(scale),
        "blurSigma": f32(sigma), "flip": bool(flip),
    }


def make_input(n, c, size, seed):
    """A seeded batch with values slightly outside [0, 1] (exercising the first clip), a grey first row
    (r = g = b: the hue conversion's degenerate branch) and a second row whose red and green tie at the max."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g) * 1.2 - 0.1
    if c == 3:
        x[:, 1, 0, :] = x[:, 0, 0, :]
        x[:, 2, 0, :] = x[:, 0, 0, :]
        x[:, 1, 1, :] = x[:, 0, 1, :]
        x[:, 2, 1, :] = x[:, 0, 1, :] * 0.5
    return x


def run_pipeline(x, p, roid=False):
    """The reference pipeline with the drawn values `p`; returns every stage. `roid`: ROID's variant
    (`get_tta_transforms(padding_mode="reflect", cotta_augs=False)`): reflect padding, no blur, no noise."""
    stages = {"input": x}
    size = x.shape[-1]
    x = torch.clip(x, 0.0, 1.0)                                   # Clip(0, 1)
    stages["clip"] = x
    for k, op in enumerate(p["jitterOrder"]):                     # ColorJitterPro.forward
        if op == BRIGHTNESS:
            x = F.adjust_brightness(x, p["brightness"])
        elif op == CONTRAST:
            x = F.adjust_contrast(x, p["contrast"])
        elif op == SATURATION:
            x = F.adjust_saturation(x, p["saturation"])
        elif op == HUE:
            x = F.adjust_hue(x, p["hue"])
        elif op == GAMMA:
            x = x.clamp(1e-8, 1.0)
            x = F.adjust_gamma(x, p["gamma"])
        stages[f"jitter{k}"] = x
    x = F.pad(x, padding=int(size / 2), padding_mode="reflect" if roid else "edge")  # Pad(int(n_pixels / 2), mode)
    stages["pad"] = x
    channels = x.shape[-3]
    affine_args = dict(angle=p["angle"], translate=[p["translateX"], p["translateY"]], scale=p["scale"],
                       shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=[0.0] * channels)
    x = F.affine(x, **affine_args)                                # RandomAffine.forward, fill 0 -> [0.] * C
    stages["affine"] = x
    if not roid:
        x = F.gaussian_blur(x, [5, 5], [p["blurSigma"], p["blurSigma"]])  # GaussianBlur(5, sigma)
        stages["blur"] = x
    x = F.center_crop(x, size)                                    # CenterCrop(n_pixels)
    stages["crop"] = x
    if p["flip"]:                                                 # RandomHorizontalFlip(0.5)
        x = F.hflip(x)
    x = x + torch.zeros_like(x)                                   # GaussianNoise(0, std) with std = 0
    x = torch.clip(x, 0.0, 1.0)                                   # Clip(0, 1)
    stages["output"] = x
    if not roid:
        check_against_transform_classes(stages, p)
    return stages


def check_against_transform_classes(stages, p):
    """Self-check: the transform classes, with their parameter draws pinned to `p`, give the same stages."""
    pad, size = stages["pad"], stages["input"].shape[-1]
    assert torch.equal(T.Pad(padding=int(size / 2), padding_mode="edge")(stages[f"jitter4"]), pad)
    affine = T.RandomAffine(degrees=[-15, 15], translate=(1 / 16, 1 / 16), scale=(0.9, 1.1), shear=None,
                            interpolation=InterpolationMode.BILINEAR, fill=None)
    affine.get_params = lambda *a: (p["angle"], (p["translateX"], p["translateY"]), p["scale"], (0.0, 0.0))
    assert torch.equal(affine(pad), stages["affine"])
    blur = T.GaussianBlur(kernel_size=5, sigma=[0.001, 0.5])
    blur.get_params = lambda *a: p["blurSigma"]
    assert torch.equal(blur(stages["affine"]), stages["blur"])
    assert torch.equal(T.CenterCrop(size=size)(stages["blur"]), stages["crop"])


def write_case(name, function, x, p, roid=False):
    stages = run_pipeline(x, p, roid)
    canvas = stages["pad"].shape[-1]
    matrix = _get_inverse_affine_matrix([0.0, 0.0], p["angle"], [float(p["translateX"]), float(p["translateY"])],
                                        p["scale"], [0.0, 0.0])
    meta = {"generator": "scripts/make_augmentation_fixtures.py", "function": function,
            "params": json.dumps(p), "matrix": json.dumps(matrix), "canvas": str(canvas)}
    path = os.path.join(OUT, f"{name}.safetensors")
    save_file({k: v.to(torch.float32).contiguous().clone() for k, v in stages.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def rgb_cases():
    """rgb32_*.safetensors and rgb8_*.safetensors / rgb16_*.safetensors: 3-channel batches. The five jitter
    orders are the cyclic shifts of (0 1 2 3 4), so every colour op is applied at every position once; hue
    shifts of both signs (including the ±0.06 ends), gamma both sides of 1, rotations of both signs with
    translation and scale, flip on and off, and an identity affine with the smallest blur sigma."""
    cases = [
        ("rgb32_a", 32, 101, params([0, 1, 2, 3, 4], 1.31, 0.74, 1.42, 0.05, 0.78, 11.3, 3, -2, 1.07, 0.41, True)),
        ("rgb32_b", 32, 102, params([1, 2, 3, 4, 0], 0.63, 1.27, 0.55, -0.06, 1.29, -14.2, -4, 4, 0.91, 0.17, False)),
        ("rgb8_c", 8, 103, params([2, 3, 4, 0, 1], 1.05, 1.12, 0.81, 0.023, 0.93, 7.9, 1, 0, 0.96, 0.5, True)),
        ("rgb8_d", 8, 104, params([3, 4, 0, 1, 2], 0.88, 0.71, 1.18, 0.06, 1.17, -3.4, 0, -1, 1.09, 0.29, False)),
        ("rgb16_e", 16, 105, params([4, 0, 1, 2, 3], 1.38, 0.95, 1.49, -0.037, 0.71, 0.0, 0, 0, 1.0, 0.001, False)),
    ]
    for name, size, seed, p in cases:
        write_case(name, "rgb_cases", make_input(2, 3, size, seed), p)


def gray_cases():
    """gray32.safetensors: a 1-channel batch (saturation and hue are identities; contrast blends with the
    per-image mean of the single channel), reversed jitter order."""
    p = params([4, 3, 2, 1, 0], 1.22, 0.76, 1.4, 0.045, 1.21, -9.6, -3, 2, 1.04, 0.36, True)
    write_case("gray32", "gray_cases", make_input(2, 1, 32, 106), p)


def roid_cases():
    """roid32_a.safetensors: ROID's consistency augmentation (reflect padding, no blur, no noise) on a
    3-channel batch, with a rotation, translation and scale that reach into the reflected border."""
    p = params([2, 0, 4, 1, 3], 1.12, 0.83, 1.31, -0.041, 1.08, 13.7, -4, 3, 0.92, 0.25, True)
    write_case("roid32_a", "roid_cases", make_input(1, 3, 32, 107), p, roid=True)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    if sys.argv[1:] == ["roid"]:
        roid_cases()
    else:
        rgb_cases()
        gray_cases()
        roid_cases()
