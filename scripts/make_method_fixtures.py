#!/usr/bin/env python3
"""Per-batch outputs of each adaptation method, run in PyTorch on a small WideResNet and a fixed
stream, for the Swift method-parity tests (Tests/Fixtures/methods/).

The methods follow the reference code's semantics (mariodoebler/test-time-adaptation `methods/`,
DequanWang/tent, qinenergy/cotta), written out here in a few lines each so that the fixtures need
only torch. Randomness (CoTTA's augmentations and restore masks) is switched off for parity
(rst = 0), and CoTTA's augmentation is replaced by a deterministic horizontal flip taken every batch
(ap = 1, N = 2); the real augmentation pipeline and the restore hook are tested on their own. Without
an augmented branch, teacher and student are identical on the first batch, the loss gradient is
exactly zero and only rounding noise is left for Adam to amplify, so no two implementations agree.

The runs are computed in float64 (PyTorch's exact answer) and stored as float32. CoTTA with Adam over
every parameter is ill-conditioned in float32: Adam's update is nearly the sign of each gradient
element, so rounding noise in near-zero gradients moves weights by ±lr; PyTorch's own float32 run
differs from its float64 run by 1e-3 to 7e-3 after four batches.

Run from the repository root: python3 scripts/make_method_fixtures.py
"""
import copy
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import WideResNet, randomize_bn  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "methods")
BATCHES = 4
BATCH_SIZE = 8


def make_stream():
    g = torch.Generator().manual_seed(21)
    # Each batch a different "domain": scaled, shifted uniform noise over a smooth pattern.
    base = torch.rand(BATCHES * BATCH_SIZE, 3, 32, 32, generator=g)
    scale = torch.tensor([1.0, 0.5, 0.8, 0.3]).repeat_interleave(BATCH_SIZE).view(-1, 1, 1, 1)
    shift = torch.tensor([0.0, 0.3, 0.1, 0.5]).repeat_interleave(BATCH_SIZE).view(-1, 1, 1, 1)
    return (base * scale + shift).clamp(0, 1)


def softmax_entropy(x):
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def set_bn_batch_stats(model):
    """TENT/CoTTA-style BN: batch statistics, running buffers deleted."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None


def run_source(model, xs, cfg):
    model.eval()
    with torch.no_grad():
        return [model(x) for x in xs]


def run_norm_test(model, xs, cfg):
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        return [model(x) for x in xs]


class AlphaBatchNorm(nn.Module):
    """bethgelab AlphaBatchNorm as used by mariodoebler `norm_alpha`."""

    def __init__(self, layer, alpha):
        super().__init__()
        self.layer = layer.eval()
        self.alpha = alpha
        self.norm = nn.BatchNorm2d(layer.num_features, affine=False, momentum=1.0).to(layer.running_mean.dtype).train()

    def forward(self, x):
        self.norm(x)
        mean = (1 - self.alpha) * self.layer.running_mean + self.alpha * self.norm.running_mean
        var = (1 - self.alpha) * self.layer.running_var + self.alpha * self.norm.running_var
        return nn.functional.batch_norm(x, mean, var, self.layer.weight, self.layer.bias, False, 0, self.layer.eps)


def run_norm_alpha(model, xs, cfg):
    # As mariodoebler's BNTest.configure_model: eval() first, then the swap, so each helper BN stays
    # in train mode and sees the batch statistics.
    model.eval()

    def swap(mod):
        for name, child in mod.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, name, AlphaBatchNorm(child, cfg["alpha"]))
            else:
                swap(child)
    swap(model)
    with torch.no_grad():
        return [model(x) for x in xs]


def run_norm_ema(model, xs, cfg):
    outs = []
    with torch.no_grad():
        for x in xs:
            model.train(); model(x)
            model.eval(); outs.append(model(x))
    return outs


def make_optimizer(params, cfg):
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=(0.9, 0.999), weight_decay=0.0)
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, dampening=0, weight_decay=0.0, nesterov=True)


def run_tent(model, xs, cfg):
    model.train()
    model.requires_grad_(False)
    set_bn_batch_stats(model)
    params = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(True)
            params += [m.weight, m.bias]
    opt = make_optimizer(params, cfg)
    outs = []
    for x in xs:
        for _ in range(cfg.get("steps", 1)):
            y = model(x)
            softmax_entropy(y).mean(0).backward()
            opt.step(); opt.zero_grad()
        outs.append(y.detach())
    return outs


def run_cotta(model, xs, cfg):
    model.train()
    model.requires_grad_(False)
    set_bn_batch_stats(model)
    for m in model.modules():
        m.requires_grad_(True)
    params = [p for n, p in model.named_parameters() if n.endswith("weight") or n.endswith("bias")]
    opt = make_optimizer(params, cfg)
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.detach_()
    anchor = copy.deepcopy(model)
    outs = []
    for x in xs:
        s = model(x)
        with torch.no_grad():
            anchor_prob = anchor(x).softmax(1).max(1)[0]
            standard = teacher(x)
            if anchor_prob.mean(0) < cfg["ap"]:  # augmentation-averaged teacher logits
                t = torch.stack([teacher(x.flip(3)) for _ in range(cfg["n_aug"])]).mean(0)
            else:
                t = standard
        if cfg["symmetric"]:
            loss = (-0.5 * (t.softmax(1) * s.log_softmax(1)).sum(1) - 0.5 * (s.softmax(1) * t.log_softmax(1)).sum(1)).mean(0)
        else:
            loss = (-(t.softmax(1) * s.log_softmax(1)).sum(1)).mean(0)
        loss.backward(); opt.step(); opt.zero_grad()
        with torch.no_grad():
            for tp, sp in zip(teacher.parameters(), model.parameters()):
                tp.data[:] = cfg["mt"] * tp.data[:] + (1 - cfg["mt"]) * sp.data[:]
        outs.append(t.detach())
    return outs


CASES = {
    "source": (run_source, {}),
    "norm_test": (run_norm_test, {}),
    "norm_alpha": (run_norm_alpha, {"alpha": 0.1}),
    "norm_ema": (run_norm_ema, {}),
    "tent": (run_tent, {"optimizer": "adam", "lr": 1e-3}),
    "tent_sgd_steps2": (run_tent, {"optimizer": "sgd", "lr": 0.01, "steps": 2}),
    "cotta": (run_cotta, {"optimizer": "adam", "lr": 1e-3, "ap": 1.0, "n_aug": 2, "mt": 0.9, "symmetric": False}),
    "cotta_symmetric_sgd": (run_cotta, {"optimizer": "sgd", "lr": 0.01, "ap": 1.0, "n_aug": 2, "mt": 0.9, "symmetric": True}),
}


def method_cases():
    """methods/model.safetensors, methods/stream.safetensors and methods/<case>.safetensors (per-batch outputs)."""
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(31)
    base = WideResNet(depth=16, widen_factor=1, num_classes=10)
    randomize_bn(base, 32)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    save_file(state, os.path.join(OUT, "model.safetensors"))
    stream = make_stream()
    save_file({"x": stream}, os.path.join(OUT, "stream.safetensors"), metadata={"batch_size": str(BATCH_SIZE)})
    xs = list(stream.split(BATCH_SIZE))
    for name, (fn, cfg) in CASES.items():
        model = WideResNet(depth=16, widen_factor=1, num_classes=10)
        model.load_state_dict(state)
        model = model.double()
        outs = fn(model, [x.double() for x in xs], cfg)
        tensors = {f"batch{i}": o.float().contiguous() for i, o in enumerate(outs)}
        # Final BN state (affine parameters and running statistics): what these methods change.
        final = {f"final.{k}": v.detach().float().clone() for k, v in model.state_dict().items()
                 if v.is_floating_point() and "bn" in k}
        if name.startswith("tent") or name == "norm_ema" or name == "norm_test":
            tensors.update(final)
        save_file(tensors, os.path.join(OUT, f"{name}.safetensors"),
                  metadata={k: str(v) for k, v in cfg.items()})
        print(f"{name}: batch0 argmax {outs[0].argmax(1).tolist()}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    method_cases()
