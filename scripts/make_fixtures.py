#!/usr/bin/env python3
"""Writes the PyTorch golden fixtures the Swift tests compare against (Tests/Fixtures/*.safetensors).

Each function below writes one file; each Swift test names the function that produced its data.
Run from the repository root:  python3 scripts/make_fixtures.py   (needs torch and safetensors;
never needed in CI: the outputs are committed). Layer fixtures are computed in float64 and stored
as float32, so they are PyTorch's exact answer; the WideResNet fixtures are computed in float32,
as the real models run.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")


def save(name, tensors, meta=None):
    path = os.path.join(OUT, name)
    tensors = {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in tensors.items()}
    save_file(tensors, path, metadata={"generator": "scripts/make_fixtures.py", **(meta or {})})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def conv2d_cases():
    """conv2d.safetensors: forward, backward to input and weight, with stride/padding/groups."""
    g = torch.Generator().manual_seed(1)
    cases = {
        "k3s1p1": dict(n=2, c=3, h=5, w=6, o=4, k=3, stride=1, padding=1, groups=1),
        "k3s2p1": dict(n=2, c=4, h=7, w=7, o=6, k=3, stride=2, padding=1, groups=1),
        "k1s2p0": dict(n=2, c=4, h=6, w=6, o=8, k=1, stride=2, padding=0, groups=1),
        "k1s1p0": dict(n=2, c=5, h=3, w=4, o=3, k=1, stride=1, padding=0, groups=1),
        "k3s1p1g2": dict(n=2, c=4, h=5, w=5, o=6, k=3, stride=1, padding=1, groups=2),
        "k3s2p1g4": dict(n=1, c=8, h=6, w=6, o=8, k=3, stride=2, padding=1, groups=4),
        "k3s1p0": dict(n=3, c=2, h=4, w=5, o=3, k=3, stride=1, padding=0, groups=1),
        # Where SwiftTTA takes Winograd F(4x4) (3x3, stride 1, one group, >= 8 channels in and out: its forward
        # passes that no backward follows, and every backward pass to the input), at paddings 1, 0 and 2, with
        # outputs that are not whole 4x4 tiles. Drawn after the cases above, so their data are unchanged.
        "k3s1p1c16": dict(n=2, c=16, h=9, w=10, o=16, k=3, stride=1, padding=1, groups=1),
        "k3s1p0c16": dict(n=2, c=16, h=10, w=11, o=16, k=3, stride=1, padding=0, groups=1),
        "k3s1p2c16": dict(n=2, c=16, h=7, w=9, o=16, k=3, stride=1, padding=2, groups=1),
    }
    t = {}
    for name, p in cases.items():
        x = torch.randn(p["n"], p["c"], p["h"], p["w"], generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(p["o"], p["c"] // p["groups"], p["k"], p["k"], generator=g, dtype=torch.float64, requires_grad=True)
        y = F.conv2d(x, w, stride=p["stride"], padding=p["padding"], groups=p["groups"])
        dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
        y.backward(dy)
        t.update({f"{name}.x": x, f"{name}.weight": w, f"{name}.y": y, f"{name}.dy": dy,
                  f"{name}.dx": x.grad, f"{name}.dweight": w.grad})
    save("conv2d.safetensors", t, {"cases": json.dumps(cases)})


def batchnorm_cases():
    """batchnorm.safetensors: BatchNorm2d in eval, train without tracking, train with tracking (two batches)."""
    g = torch.Generator().manual_seed(2)
    c = 3
    x = torch.randn(4, c, 5, 5, generator=g, dtype=torch.float64) * 2 + 0.7
    x2 = torch.randn(4, c, 5, 5, generator=g, dtype=torch.float64) * 0.5 - 1.0
    weight = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(c, generator=g, dtype=torch.float64)
    rm = torch.randn(c, generator=g, dtype=torch.float64)
    rv = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    t = {"x": x, "x2": x2, "weight": weight, "bias": bias, "running_mean": rm, "running_var": rv, "dy": dy}
    for mode in ["eval", "train_untracked", "train_tracked"]:
        bn = nn.BatchNorm2d(c).double()
        with torch.no_grad():
            bn.weight.copy_(weight); bn.bias.copy_(bias)
            bn.running_mean.copy_(rm); bn.running_var.copy_(rv)
        if mode == "eval":
            bn.eval()
        elif mode == "train_untracked":
            bn.track_running_stats = False
            bn.running_mean = None
            bn.running_var = None
            bn.train()
        else:
            bn.train()
        xi = x.clone().requires_grad_(True)
        y = bn(xi)
        y.backward(dy)
        t.update({f"{mode}.y": y, f"{mode}.dx": xi.grad, f"{mode}.dweight": bn.weight.grad, f"{mode}.dbias": bn.bias.grad})
        if mode == "train_tracked":
            t["train_tracked.running_mean"] = bn.running_mean.clone()
            t["train_tracked.running_var"] = bn.running_var.clone()
            y2 = bn(x2)
            t["train_tracked.y2"] = y2
            t["train_tracked.running_mean2"] = bn.running_mean.clone()
            t["train_tracked.running_var2"] = bn.running_var.clone()
            t["train_tracked.num_batches_tracked"] = bn.num_batches_tracked.clone()
    # momentum=None: cumulative moving average over the batches seen.
    bn = nn.BatchNorm2d(c, momentum=None).double()
    with torch.no_grad():
        bn.running_mean.copy_(rm); bn.running_var.copy_(rv)
    bn.train(); bn(x); bn(x2)
    t["cumulative.running_mean"] = bn.running_mean.clone()
    t["cumulative.running_var"] = bn.running_var.clone()
    save("batchnorm.safetensors", t)


def elementwise_cases():
    """misc.safetensors: ReLU, Linear, global and windowed average pooling, softmax, log-softmax."""
    g = torch.Generator().manual_seed(3)
    t = {}
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.relu(x); dy = torch.randn(y.shape, generator=g, dtype=torch.float64); y.backward(dy)
    t.update({"relu.x": x, "relu.y": y, "relu.dy": dy, "relu.dx": x.grad})

    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.linear(x, w, b); dy = torch.randn(y.shape, generator=g, dtype=torch.float64); y.backward(dy)
    t.update({"linear.x": x, "linear.weight": w, "linear.bias": b, "linear.y": y, "linear.dy": dy,
              "linear.dx": x.grad, "linear.dweight": w.grad, "linear.dbias": b.grad})

    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.adaptive_avg_pool2d(x, 1).view(2, 3); dy = torch.randn(y.shape, generator=g, dtype=torch.float64); y.backward(dy)
    t.update({"gap.x": x, "gap.y": y, "gap.dy": dy, "gap.dx": x.grad})

    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.avg_pool2d(x, 2); dy = torch.randn(y.shape, generator=g, dtype=torch.float64); y.backward(dy)
    t.update({"avgpool.x": x, "avgpool.y": y, "avgpool.dy": dy, "avgpool.dx": x.grad})

    x = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = F.softmax(x, 1); dy = torch.randn(y.shape, generator=g, dtype=torch.float64); y.backward(dy)
    t.update({"softmax.x": x, "softmax.y": y, "softmax.dy": dy, "softmax.dx": x.grad})
    x = x.detach().clone().requires_grad_(True)
    y = F.log_softmax(x, 1); y.backward(dy)
    t.update({"logsoftmax.y": y, "logsoftmax.dx": x.grad})
    save("misc.safetensors", t)


def loss_cases():
    """losses.safetensors: softmax entropy (TENT), CE hard and soft (CoTTA CIFAR), symmetric CE (CoTTA ImageNet, RMT)."""
    g = torch.Generator().manual_seed(4)
    b, c = 6, 10
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (b,), generator=g)
    t = {"logits": logits, "teacher": teacher, "labels": labels.to(torch.int64)}

    z = logits.clone().requires_grad_(True)
    loss = -(z.softmax(1) * z.log_softmax(1)).sum(1).mean(0); loss.backward()
    t.update({"entropy.value": loss.reshape(1), "entropy.grad": z.grad})

    z = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(z, labels); loss.backward()
    t.update({"ce.value": loss.reshape(1), "ce.grad": z.grad})

    z = logits.clone().requires_grad_(True)
    loss = (-(teacher.softmax(1) * z.log_softmax(1)).sum(1)).mean(0); loss.backward()
    t.update({"softce.value": loss.reshape(1), "softce.grad": z.grad, "softce.targets": teacher.softmax(1)})

    z = logits.clone().requires_grad_(True)
    loss = (-0.5 * (teacher.softmax(1) * z.log_softmax(1)).sum(1)
            - 0.5 * (z.softmax(1) * teacher.log_softmax(1)).sum(1)).mean(0)
    loss.backward()
    t.update({"symce.value": loss.reshape(1), "symce.grad": z.grad})
    save("losses.safetensors", t)


def optimizer_cases():
    """optimizers.safetensors: three steps of SGD (plain, momentum+dampening+wd, Nesterov+wd) and Adam (plain, betas+wd)."""
    g = torch.Generator().manual_seed(5)
    p0 = torch.randn(10, generator=g, dtype=torch.float64)
    grads = [torch.randn(10, generator=g, dtype=torch.float64) for _ in range(3)]
    configs = {
        "sgd_plain": lambda p: torch.optim.SGD([p], lr=0.1),
        "sgd_momentum": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        "sgd_nesterov": lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
        "adam": lambda p: torch.optim.Adam([p], lr=1e-2),
        "adam_wd": lambda p: torch.optim.Adam([p], lr=1e-3, betas=(0.8, 0.99), weight_decay=0.1),
    }
    t = {"p0": p0}
    for i, gr in enumerate(grads):
        t[f"grad{i + 1}"] = gr
    for name, make in configs.items():
        p = nn.Parameter(p0.clone())
        opt = make(p)
        for i, gr in enumerate(grads):
            p.grad = gr.clone()
            opt.step()
            t[f"{name}.step{i + 1}"] = p.detach().clone()
    save("optimizers.safetensors", t)


# RobustBench's WideResNet (model_zoo/architectures/wide_resnet.py), written out so the fixtures do
# not depend on robustbench being installed. Same module names and forward pass.
class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(x)))
        else:
            out = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(out)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[BasicBlock(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1)
                                     for i in range(int(nb_layers))])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, widen_factor=10, in_channels=3):
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]
        for m in self.modules():  # RobustBench's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1); m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


def randomize_bn(model, seed):
    """Source-like BN state: non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.num_batches_tracked.fill_(7)


def configure(model, mode):
    if mode == "eval":
        model.eval()
    elif mode == "train_untracked":  # TENT: batch statistics, no running buffers
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
    else:  # train with tracking (norm_test)
        model.train()


def wideresnet_cases():
    """wrn16_2.safetensors (state dict) + wrn16_2_io.safetensors: logits and mean-entropy gradients
    w.r.t. every BN γ/β in three BN modes, running statistics after the tracked pass;
    wrn16_1.safetensors + wrn16_1_io.safetensors: gradients w.r.t. every parameter (batch statistics)."""
    torch.manual_seed(6)
    model = WideResNet(depth=16, widen_factor=2, num_classes=10)
    randomize_bn(model, 7)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "wrn16_2.safetensors"))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    t = {"x": x}
    for mode in ["eval", "train_untracked", "train_tracked"]:
        m = WideResNet(depth=16, widen_factor=2, num_classes=10)
        m.load_state_dict(state)
        configure(m, mode)
        for p in m.parameters():
            p.requires_grad_(False)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.requires_grad_(True); mod.bias.requires_grad_(True)
        logits = m(x)
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(0)
        loss.backward()
        t[f"{mode}.logits"] = logits
        t[f"{mode}.loss"] = loss.reshape(1)
        for name, p in m.named_parameters():
            if p.grad is not None:
                t[f"{mode}.grad.{name}"] = p.grad
        if mode == "train_tracked":
            for name, b in m.named_buffers():
                if name.endswith("running_mean") or name.endswith("running_var"):
                    t[f"{mode}.state.{name}"] = b
    save("wrn16_2_io.safetensors", t)

    # All-parameter gradients are computed in float64 (PyTorch's exact answer) on a batch of 8. With
    # batch statistics over only 3 images the problem is so ill-conditioned that PyTorch's own float32
    # gradients differ from its float64 ones by 10%: no float32 implementation can be held to 1e-4 there.
    torch.manual_seed(9)
    small = WideResNet(depth=16, widen_factor=1, num_classes=5)
    randomize_bn(small, 10)
    save_file({k: v.clone() for k, v in small.state_dict().items()}, os.path.join(OUT, "wrn16_1.safetensors"))
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    small = small.double()
    configure(small, "train_untracked")
    logits = small(x.double())
    loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(0)
    loss.backward()
    t = {"x": x, "logits": logits}
    for name, p in small.named_parameters():
        t[f"grad.{name}"] = p.grad
    save("wrn16_1_io.safetensors", t)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    conv2d_cases()
    batchnorm_cases()
    elementwise_cases()
    loss_cases()
    optimizer_cases()
    wideresnet_cases()
