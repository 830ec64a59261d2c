#!/usr/bin/env python3
"""Golden fixtures for the ImageNet-C / CIFAR-100-C source CNNs (Tests/Fixtures/cnn/*.safetensors).

Each function writes one model's state dict and its input/output file; each Swift test names the
function it reads. Run from the repository root:  python3 scripts/make_cnn_fixtures.py
(needs torch, torchvision and safetensors; never needed in CI: the outputs are committed).

- torchvision's ResNet is built from torchvision's own `Bottleneck` with a smaller base width than
  torchvision allows (64 is hard-coded there); `tiny_torchvision_resnet` checks that at base 64 it
  gives exactly `torchvision.models.resnet50()`'s keys and shapes.
- RobustBench's `CifarResNeXt` is written out below (same module names and forward pass, from
  `robustbench/model_zoo/architectures/resnext.py`) with its stem width as a parameter (64 there).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models.resnet import Bottleneck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import configure, randomize_bn, save  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyTorchvisionResNet(torchvision.models.ResNet):
    """torchvision's `ResNet` graph and names with base width `base` (torchvision: 64)."""

    def __init__(self, layers, base=64, groups=1, width_per_group=64, num_classes=1000):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = base, 1, groups, width_per_group
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, base, layers[0])
        self.layer2 = self._make_layer(Bottleneck, 2 * base, layers[1], stride=2)
        self.layer3 = self._make_layer(Bottleneck, 4 * base, layers[2], stride=2)
        self.layer4 = self._make_layer(Bottleneck, 8 * base, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * base * Bottleneck.expansion, num_classes)


def tiny_torchvision_resnet(layers, base, num_classes, groups=1, width_per_group=64):
    full = TinyTorchvisionResNet([3, 4, 6, 3])
    ref = torchvision.models.resnet50()
    assert [(k, v.shape) for k, v in full.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    return TinyTorchvisionResNet(layers, base, groups, width_per_group, num_classes)


class ResNeXtBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, cardinality, base_width, stride=1, downsample=None):
        super().__init__()
        dim = int(math.floor(planes * (base_width / 64.0)))
        self.conv_reduce = nn.Conv2d(inplanes, dim * cardinality, 1, 1, 0, bias=False)
        self.bn_reduce = nn.BatchNorm2d(dim * cardinality)
        self.conv_conv = nn.Conv2d(dim * cardinality, dim * cardinality, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(dim * cardinality)
        self.conv_expand = nn.Conv2d(dim * cardinality, planes * 4, 1, 1, 0, bias=False)
        self.bn_expand = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        b = F.relu(self.bn_reduce(self.conv_reduce(x)))
        b = F.relu(self.bn(self.conv_conv(b)))
        b = self.bn_expand(self.conv_expand(b))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(residual + b)


class CifarResNeXt(nn.Module):
    """RobustBench's `CifarResNeXt` (stem 64 there) wrapped with its `(x - mu) / sigma`, mu = sigma = 0.5."""

    def __init__(self, depth=29, cardinality=4, base_width=32, num_classes=100, stem=64):
        super().__init__()
        n = (depth - 2) // 9
        self.cardinality, self.base_width = cardinality, base_width
        self.conv_1_3x3 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(stem)
        self.inplanes = stem
        self.stage_1 = self._make_layer(stem, n, 1)
        self.stage_2 = self._make_layer(2 * stem, n, 2)
        self.stage_3 = self._make_layer(4 * stem, n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.classifier = nn.Linear(16 * stem, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                m.bias.data.zero_()

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [ResNeXtBottleneck(self.inplanes, planes, self.cardinality, self.base_width, stride, downsample)]
        self.inplanes = planes * 4
        layers += [ResNeXtBottleneck(self.inplanes, planes, self.cardinality, self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = (x - 0.5) / 0.5
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(self.avgpool(x).view(x.size(0), -1))


class Normalized(nn.Module):
    """torchvision's transforms.Normalize, applied before the model (SwiftTTA applies it inside)."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def entropy(logits):
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(0)


def write_cases(name, make, wrap, x, x_all):
    """`<name>.safetensors` (state dict) and `<name>_io.safetensors`: logits, pre-logits features (`<mode>.features`,
    the input of the final Linear: the pooled, flattened last stage) and the mean entropy and its gradients
    w.r.t. every BN gamma/beta in three BN modes (float32, as models run), running statistics after the
    tracked pass; and, in float64 with batch statistics, gradients w.r.t. every parameter."""
    model = make()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, f"{name}.safetensors"))
    t = {"x": x, "x_all": x_all}
    for mode in ["eval", "train_untracked", "train_tracked"]:
        m = make()
        m.load_state_dict(state)
        configure(m, mode)
        for p in m.parameters():
            p.requires_grad_(False)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.requires_grad_(True); mod.bias.requires_grad_(True)
        features = []
        head = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]   # torchvision `fc`, RobustBench `classifier`
        hook = head.register_forward_hook(lambda mod, inp, out: features.append(inp[0].detach().clone()))
        logits = wrap(m)(x)
        hook.remove()
        t[f"{mode}.features"] = features[0]
        loss = entropy(logits)
        loss.backward()
        t[f"{mode}.logits"], t[f"{mode}.loss"] = logits, loss.reshape(1)
        for k, p in m.named_parameters():
            if p.grad is not None:
                t[f"{mode}.grad.{k}"] = p.grad
        if mode == "train_tracked":
            for k, b in m.named_buffers():
                if k.endswith("running_mean") or k.endswith("running_var"):
                    t[f"{mode}.state.{k}"] = b
    m = make()
    m.load_state_dict(state)
    m = m.double()
    configure(m, "train_untracked")
    logits = wrap(m)(x_all.double())
    entropy(logits).backward()
    t["all.logits"] = logits
    for k, p in m.named_parameters():
        t[f"all.grad.{k}"] = p.grad
    save(f"{name}_io.safetensors", t)


def resnet_cases():
    """cnn/resnet_tiny{,_io}.safetensors: torchvision's ResNet graph, blocks [2,1,1,1], base 4, 10 classes,
    ImageNet normalisation outside (SwiftTTA applies it inside); 48x48 inputs."""
    def make():
        torch.manual_seed(21)
        m = tiny_torchvision_resnet([2, 1, 1, 1], base=4, num_classes=10)
        randomize_bn(m, 22)
        return m
    x = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(23))
    x_all = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(24))
    write_cases("cnn/resnet_tiny", make, lambda m: Normalized(m, IMAGENET_MEAN, IMAGENET_STD), x, x_all)


def resnext_cases():
    """cnn/resnext_tiny{,_io}.safetensors: RobustBench's CifarResNeXt, depth 20 (2 blocks a stage),
    cardinality 4, base width 16, stem 8, 10 classes, (x - 0.5) / 0.5 inside; 32x32 inputs."""
    def make():
        torch.manual_seed(31)
        m = CifarResNeXt(depth=20, cardinality=4, base_width=16, num_classes=10, stem=8)
        randomize_bn(m, 32)
        return m
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(33))
    x_all = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(34))
    write_cases("cnn/resnext_tiny", make, lambda m: m, x, x_all)


def maxpool_cases():
    """cnn/maxpool.safetensors: F.max_pool2d(3, 2, 1) and (2, 2, 0) forward and backward (float64)."""
    g = torch.Generator().manual_seed(41)
    t = {}
    for name, (k, s, p, h, w) in {"k3s2p1": (3, 2, 1, 9, 8), "k2s2p0": (2, 2, 0, 6, 7)}.items():
        x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64).requires_grad_(True)
        y = F.max_pool2d(x, k, s, p)
        dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
        y.backward(dy)
        t.update({f"{name}.x": x, f"{name}.y": y, f"{name}.dy": dy, f"{name}.dx": x.grad})
    save("cnn/maxpool.safetensors", t)


if __name__ == "__main__":
    os.makedirs(os.path.join(OUT, "cnn"), exist_ok=True)
    torch.set_num_threads(1)
    maxpool_cases()
    resnet_cases()
    resnext_cases()
