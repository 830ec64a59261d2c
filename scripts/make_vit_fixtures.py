#!/usr/bin/env python3
"""Writes the Vision Transformer fixtures (Tests/Fixtures/vit/*.safetensors) the Swift tests compare against.

The model is timm's own `VisionTransformer` (the class behind `vit_base_patch16_224`), so names,
layout and arithmetic are timm's, at a tiny width (embed 32, depth 2, heads 2, patch 8, image 32).
Each function writes one file; each Swift test names the function that produced its data.
Run from the repository root:  python3 scripts/make_vit_fixtures.py
Needs torch, safetensors and timm (`pip install --no-deps timm` suffices; written with timm 1.0.31);
never needed in CI: the outputs are committed.
"""
import os
import sys

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_method_fixtures import run_sar  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "vit")
TINY = dict(img_size=32, patch_size=8, in_chans=3, num_classes=10, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)


def save(name, tensors, meta=None):
    path = os.path.join(OUT, name)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"generator": "scripts/make_vit_fixtures.py", "timm": timm.__version__, **(meta or {})})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def kernel_cases():
    """kernels.safetensors: LayerNorm (eps 1e-6), exact GELU and timm's multi-head attention core
    (qkv → reshape (B, N, 3, H, hd) → softmax(q·kᵀ·scale)·v → (B, N, D)), forward and backward, float64."""
    g = torch.Generator().manual_seed(1)
    t = {}
    x = (torch.randn(3, 5, 16, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_(True)
    w = (1 + 0.3 * torch.randn(16, generator=g, dtype=torch.float64)).requires_grad_(True)
    b = (0.3 * torch.randn(16, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = F.layer_norm(x, (16,), w, b, eps=1e-6)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    t.update({"layernorm.x": x, "layernorm.weight": w, "layernorm.bias": b, "layernorm.y": y, "layernorm.dy": dy,
              "layernorm.dx": x.grad, "layernorm.dweight": w.grad, "layernorm.dbias": b.grad})

    x = (torch.randn(4, 37, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = F.gelu(x)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    t.update({"gelu.x": x, "gelu.y": y, "gelu.dy": dy, "gelu.dx": x.grad})

    bsz, n, heads, hd = 2, 5, 2, 4
    qkv = (torch.randn(bsz, n, 3 * heads * hd, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    q, k, v = qkv.reshape(bsz, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(bsz, n, heads * hd)
    dout = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(dout)
    t.update({"attention.qkv": qkv, "attention.out": out, "attention.dout": dout, "attention.dqkv": qkv.grad})
    save("kernels.safetensors", t, {"attention.heads": str(heads)})


def tiny_vit(seed):
    """timm's VisionTransformer at TINY width, initialised by `randomize`."""
    torch.manual_seed(seed)
    return randomize(VisionTransformer(**TINY), seed)


def randomize(model, seed):
    """timm's own init, then LayerNorm affines, class token and position embedding randomised (timm
    starts them at 1/0, ~0, ~0, which would hide mistakes); returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        model.cls_token.copy_(0.5 * torch.randn(model.cls_token.shape, generator=g))
        model.pos_embed.copy_(0.5 * torch.randn(model.pos_embed.shape, generator=g))
        model.patch_embed.proj.weight.mul_(8)   # let the image, not the position embedding, dominate the tokens
        model.head.weight.mul_(20)   # confident enough that the entropy has real gradients
    return model.eval()


def normalized(x):
    """timm's data config for vit_base_patch16_224: mean = std = 0.5 per channel."""
    return (x - 0.5) / 0.5


def entropy(logits):
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def layer_norm_affine_only(model):
    """TENT/EATA's selection on a ViT (`collect_params` in the reference): every LayerNorm weight and bias."""
    model.requires_grad_(False)
    params = []
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    return params


def model_cases():
    """tiny.safetensors (state dict, metadata num_heads) + tiny_io.safetensors: float32 logits, pre-logits
    features (`features`: timm's `forward_head(forward_features(x), pre_logits=True)`, the class token after the
    final norm) and the LayerNorm-affine gradients of the mean entropy; float64 gradients of every parameter."""
    model = tiny_vit(3)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "tiny.safetensors"), metadata={"num_heads": str(TINY["num_heads"]),
                                                                      "generator": "scripts/make_vit_fixtures.py"})
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    t = {"x": x}
    layer_norm_affine_only(model)
    logits = model(normalized(x))
    loss = entropy(logits).mean(0)
    loss.backward()
    t["logits"] = logits
    t["loss"] = loss.reshape(1)
    with torch.no_grad():
        t["features"] = model.forward_head(model.forward_features(normalized(x)), pre_logits=True)
    for name, p in model.named_parameters():
        if p.grad is not None:
            t[f"grad.{name}"] = p.grad

    full = tiny_vit(3).double()
    full.requires_grad_(True)
    logits = full(normalized(x.double()))
    entropy(logits).mean(0).backward()
    t["f64.logits"] = logits
    for name, p in full.named_parameters():
        t[f"f64.grad.{name}"] = p.grad
    save("tiny_io.safetensors", t)


def tent_cases():
    """tent.safetensors: TENT on the tiny ViT over 3 batches of 4 (LayerNorm affine, SGD lr 0.01,
    momentum 0.9, Nesterov), the per-batch logits before each update, and the final LayerNorm parameters."""
    model = tiny_vit(3)
    xs = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.SGD(layer_norm_affine_only(model), lr=0.01, momentum=0.9, dampening=0, weight_decay=0.0, nesterov=True)
    t = {"x": xs}
    for i in range(3):
        y = model(normalized(xs[4 * i:4 * i + 4]))
        entropy(y).mean(0).backward()
        opt.step()
        opt.zero_grad()
        t[f"logits.{i}"] = y
    for name, p in model.named_parameters():
        if p.requires_grad:
            t[f"final.{name}"] = p
    save("tent.safetensors", t)


class Normalized(nn.Module):
    """The ViT behind timm's input normalisation, as SwiftTTA runs it."""
    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        return self.vit(normalized(x))


def sar_layer_norm_params(vit):
    """SAR's `collect_params` on timm names: LayerNorm γ/β, except modules named with `layer4`,
    `blocks.9`–`blocks.11` or `norm.`, and the top-level `norm`; only those keep gradients."""
    vit.requires_grad_(False)
    params = []
    for nm, m in vit.named_modules():
        if any(s in nm for s in ["layer4", "blocks.9", "blocks.10", "blocks.11", "norm."]) or nm == "norm":
            continue
        if isinstance(m, nn.LayerNorm):
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    return params


def sar_cases():
    """sar.safetensors: SAR (`run_sar` of make_method_fixtures.py: SAM around SGD lr 1e-3, margin 0.4·ln 10)
    on a more confident tiny ViT (sar_model.safetensors) over 3 batches of 4: per-batch logits, the loss
    EMA, and the final LayerNorm parameters (the final `norm` stays frozen)."""
    vit = tiny_vit(3)
    with torch.no_grad():
        vit.head.weight.mul_(4)
    save_file({k: v.clone().contiguous() for k, v in vit.state_dict().items()}, os.path.join(OUT, "sar_model.safetensors"),
              metadata={"num_heads": str(TINY["num_heads"]), "generator": "scripts/make_vit_fixtures.py"})
    xs = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    params = sar_layer_norm_params(vit)
    outs, extra = run_sar(Normalized(vit), list(xs.split(4)), {"lr": 1e-3, "margin_e0": 0.4, "reset_constant": 0.2}, params)
    t = {"x": xs, **extra}
    for i, y in enumerate(outs):
        t[f"logits.{i}"] = y
        print(f"  sar: batch {i}: {(entropy(y) < 0.4 * torch.log(torch.tensor(10.0))).sum().item()} of 4 reliable")
    for name, p in vit.named_parameters():
        if isinstance(dict(vit.named_modules()).get(name.rsplit(".", 1)[0]), nn.LayerNorm):
            t[f"final.{name}"] = p
    save("sar.safetensors", t)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    kernel_cases()
    model_cases()
    tent_cases()
    sar_cases()
