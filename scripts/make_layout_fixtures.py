#!/usr/bin/env python3
"""Golden fixtures for the checkpoint layouts PyTorch users save (Tests/Fixtures/cnn/layout_*.safetensors).

Each file is `save_file(model.state_dict())` of a model as the field builds it, with the input normalisation
stored beside the network, so SwiftTTA must read it from the file:
- `layout_mu_sigma_cases`: RobustBench's CIFAR models that normalise inside (`Hendrycks2020AugMixResNeXtNet`,
  `Hendrycks2020AugMixWRNNet`) register `mu` and `sigma` as (1, 3, 1, 1) buffers beside the network's keys;
- `layout_normalizer_cases`: the reference repo and RobustBench wrap ImageNet models as
  `nn.Sequential(OrderedDict(normalize=ImageNormalizer(mean, std), model=net))`, keys `normalize.mean`,
  `normalize.std` and `model.<network key>`.
The means and stds are not the architectures' defaults, so a loader that ignored them would give other logits.
Run from the repository root:  python3 scripts/make_layout_fixtures.py  (needs torch, torchvision, safetensors;
never in CI: the outputs are committed).
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_cnn_fixtures import CifarResNeXt, tiny_torchvision_resnet  # noqa: E402
from make_fixtures import configure, randomize_bn, save  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)


class ImageNormalizer(nn.Module):
    """RobustBench's `ImageNormalizer` (robustbench/model_zoo/architectures/utils_architectures.py): persistent
    `mean` and `std` buffers of shape (1, 3, 1, 1)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class MuSigmaResNeXt(CifarResNeXt):
    """`Hendrycks2020AugMixResNeXtNet`'s pattern: the CIFAR ResNeXt with `mu`/`sigma` buffers replacing its
    fixed (x - 0.5) / 0.5."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("mu", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("sigma", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mu) / self.sigma
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(self.avgpool(x).view(x.size(0), -1))


def write(name, model, x):
    model.eval()
    configure(model, "eval")
    with torch.no_grad():
        logits = model(x)
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, f"{name}.safetensors"))
    save(f"{name}_io.safetensors", {"x": x, "eval.logits": logits}, meta={"generator": "scripts/make_layout_fixtures.py"})


def layout_mu_sigma_cases():
    """cnn/layout_mu_sigma{,_io}.safetensors: the tiny CIFAR ResNeXt (as `resnext_cases`) with mu/sigma buffers."""
    torch.manual_seed(61)
    m = MuSigmaResNeXt(MEAN, STD, depth=20, cardinality=4, base_width=16, num_classes=10, stem=8)
    randomize_bn(m, 62)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(63))
    write("cnn/layout_mu_sigma", m, x)


def layout_normalizer_cases():
    """cnn/layout_normalizer{,_io}.safetensors: the tiny torchvision ResNet (as `resnet_cases`) wrapped as
    Sequential(normalize=ImageNormalizer, model=net)."""
    torch.manual_seed(71)
    net = tiny_torchvision_resnet([2, 1, 1, 1], base=4, num_classes=10)
    randomize_bn(net, 72)
    m = nn.Sequential(OrderedDict([("normalize", ImageNormalizer(MEAN, STD)), ("model", net)]))
    x = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(73))
    write("cnn/layout_normalizer", m, x)


if __name__ == "__main__":
    torch.set_num_threads(1)
    layout_mu_sigma_cases()
    layout_normalizer_cases()
