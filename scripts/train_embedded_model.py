#!/usr/bin/env python3
"""Train SwiftTTA's embedded source model: a RobustBench-architecture WideResNet
(pre-activation, `model_zoo/architectures/wide_resnet.py` key names) on
Fashion-MNIST padded to 32x32, 1 input channel, inputs in [0, 1], no normalisation.

Writes
  data/models/fmnist-wrn-<depth>-<widen>.safetensors   (model.state_dict(), incl. num_batches_tracked)
  data/models/README.md                                (architecture, recipe, results)
and evaluates the model on the clean test set and on the FMNIST-C files written by
scripts/make_embedded_benchmark.py: source (eval mode), norm_test (BN uses the
statistics of each test batch of 100) and one-pass TENT.

CPU only; torch.set_num_threads(2).  Everything is seeded (--seed).

Usage: python3 scripts/train_embedded_model.py [--depth 10 --widen 2 --epochs 1.25]
"""

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_embedded_benchmark import CORRUPTIONS, load_fmnist, pad32, select_test_subset  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# --------------------------------------------------------------------------- model
# Faithful to RobustBench wide_resnet.py (spec 2.1) except: `in_channels` argument
# and adaptive average pooling (== avg_pool2d(out, 8) for 32x32 inputs).

class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))          # shortcut sees the ACTIVATED input
            out = self.relu2(self.bn2(self.conv1(x)))
        else:
            out = self.relu1(self.bn1(x))        # identity uses the raw input
            out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers, in_planes, out_planes, block, stride, dropRate=0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1, dropRate)
            for i in range(int(nb_layers))])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=16, num_classes=10, widen_factor=2, dropRate=0.0, in_channels=1, bias_last=True):
        super().__init__()
        nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert (depth - 4) % 6 == 0
        n = (depth - 4) / 6
        self.conv1 = nn.Conv2d(in_channels, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, nChannels[0], nChannels[1], BasicBlock, 1, dropRate)
        self.block2 = NetworkBlock(n, nChannels[1], nChannels[2], BasicBlock, 2, dropRate)
        self.block3 = NetworkBlock(n, nChannels[2], nChannels[3], BasicBlock, 2, dropRate)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(nChannels[3], num_classes, bias=bias_last)
        self.nChannels = nChannels[3]
        # RobustBench initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


# --------------------------------------------------------------------------- helpers

def to_input(x_uint8):
    """(N,32,32) or (N,32,32,1) uint8 -> (N,1,32,32) float32 in [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(x_uint8))
    if x.dim() == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def augment(xb, gen):
    """Random crop 32x32 from the zero-padded (+2 px) image, and horizontal flip."""
    n = xb.shape[0]
    padded = F.pad(xb, (2, 2, 2, 2))
    offs = torch.randint(0, 5, (n, 2), generator=gen)
    out = torch.stack([padded[i, :, offs[i, 0]:offs[i, 0] + 32, offs[i, 1]:offs[i, 1] + 32] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def predict(model, x_uint8, bs=500):
    preds = []
    for i in range(0, len(x_uint8), bs):
        preds.append(model(to_input(x_uint8[i:i + bs])).argmax(1))
    return torch.cat(preds).numpy()


def bn_adapt_model(model, tent=False):
    """norm_test / TENT setup as in tent's norm.py / tent.py: BN layers use batch
    statistics (train mode, no running stats); TENT also trains BN affine params."""
    m = copy.deepcopy(model)
    m.train()
    params = []
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.track_running_stats = False
            mod.running_mean = None
            mod.running_var = None
            if tent:
                params += [mod.weight, mod.bias]
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return m, params


def norm_test_predict(model, x_uint8, bs=100):
    m, _ = bn_adapt_model(model)
    preds = []
    with torch.no_grad():
        for i in range(0, len(x_uint8), bs):
            preds.append(m(to_input(x_uint8[i:i + bs])).argmax(1))
    return torch.cat(preds).numpy()


def tent_predict(model, x_uint8, bs=100, lr=1e-3):
    """One pass of TENT (Adam lr 1e-3, betas (0.9, 0.999), one step per batch,
    predictions taken from the forward pass before the update, as in tent.py)."""
    m, params = bn_adapt_model(model, tent=True)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    preds = []
    for i in range(0, len(x_uint8), bs):
        logits = m(to_input(x_uint8[i:i + bs]))
        ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        ent.backward()
        opt.step()
        opt.zero_grad()
        preds.append(logits.argmax(1).detach())
    return torch.cat(preds).numpy()


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--widen", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.25)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak LR of the one-cycle schedule")
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default=os.path.join(HERE, "..", "data", "fashion-mnist-c", "FMNIST-C"))
    ap.add_argument("--out-dir", default=os.path.join(HERE, "..", "data", "models"))
    ap.add_argument("--all-severities", action="store_true",
                    help="also evaluate severities 1-4 (default: severity 5 only)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x_train, y_train = load_fmnist("train")
    x_test, y_test = load_fmnist("t10k")
    x_train, x_test = pad32(x_train), pad32(x_test)
    xt = to_input(x_train)
    yt = torch.from_numpy(y_train.astype(np.int64))

    model = WideResNet(depth=args.depth, widen_factor=args.widen, in_channels=1)
    n_params = sum(p.numel() for p in model.parameters())
    sd_keys = len(model.state_dict())
    name = f"fmnist-wrn-{args.depth}-{args.widen}"
    print(f"{name}: {n_params:,} parameters, {sd_keys} state_dict entries")

    steps_per_epoch = len(xt) // args.batch_size
    total_steps = int(round(args.epochs * steps_per_epoch))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total_steps,
                                                pct_start=0.25, anneal_strategy="cos",
                                                div_factor=25.0, final_div_factor=1e3)
    # channels_last is ~15% faster for these convs on CPU; numerically the same model.
    model = model.to(memory_format=torch.channels_last)
    x_mon, y_mon = x_test[:1000], y_test[:1000]  # progress monitor only
    model.train()
    t0, c0 = time.time(), time.process_time()
    step, perm, pos = 0, None, 0
    run_loss, run_acc = 0.0, 0.0
    while step < total_steps:
        if perm is None or pos + args.batch_size > len(perm):
            perm = torch.randperm(len(xt), generator=gen)
            pos = 0
        idx = perm[pos:pos + args.batch_size]
        pos += args.batch_size
        xb = augment(xt[idx], gen).contiguous(memory_format=torch.channels_last)
        yb = yt[idx]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        run_loss = 0.98 * run_loss + 0.02 * loss.item() if step > 1 else loss.item()
        run_acc = 0.98 * run_acc + 0.02 * (logits.argmax(1) == yb).float().mean().item() if step > 1 else 0.1
        if step % 50 == 0 or step == total_steps:
            el = time.time() - t0
            print(f"step {step}/{total_steps} ep {step / steps_per_epoch:.2f} loss {run_loss:.3f} "
                  f"acc {run_acc:.3f} lr {sched.get_last_lr()[0]:.4f} {el:.0f}s "
                  f"(eta {el / step * (total_steps - step):.0f}s)", flush=True)
        if step % steps_per_epoch == 0 and step < total_steps:
            model.eval()
            acc = (predict(model, x_mon) == y_mon).mean()
            model.train()
            print(f"  epoch {step // steps_per_epoch}: accuracy on test[:1000] {acc * 100:.1f}%", flush=True)
    train_time = time.time() - t0
    train_cpu = time.process_time() - c0
    print(f"training time {train_time:.0f}s wall, {train_cpu:.0f}s CPU (all threads)")

    model = model.to(memory_format=torch.contiguous_format)
    model.eval()
    os.makedirs(args.out_dir, exist_ok=True)
    from safetensors.torch import save_file
    path = os.path.join(os.path.abspath(args.out_dir), f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    print(f"saved {path} ({os.path.getsize(path):,} bytes)")

    # ---- clean accuracy
    t1 = time.time()
    pred = predict(model, x_test)
    clean_acc = float((pred == y_test).mean())
    per_class = [float((pred[y_test == c] == c).mean()) for c in range(10)]
    sel = select_test_subset(y_test, 0)
    sub_acc = float((pred[sel] == y_test[sel]).mean())
    sub_nt = float((norm_test_predict(model, x_test[sel]) == y_test[sel]).mean())
    print(f"clean test accuracy {clean_acc * 100:.2f}% (10,000 images); "
          f"on the {len(sel)} FMNIST-C images (clean): source {sub_acc * 100:.1f}%, norm_test {sub_nt * 100:.1f}%")

    # ---- FMNIST-C
    labels = np.load(os.path.join(args.bench, "labels.npy")).astype(np.int64)
    K = len(labels) // 5
    assert np.array_equal(labels[:K], y_test[sel]), "FMNIST-C labels do not match the selection"
    rows = []
    for c in CORRUPTIONS:
        x = np.load(os.path.join(args.bench, f"{c}.npy"))
        errs = {}
        for s in (range(1, 6) if args.all_severities else (5,)):
            xs, ys = x[(s - 1) * K:s * K], labels[(s - 1) * K:s * K]
            errs[("source", s)] = float((predict(model, xs) != ys).mean())
            errs[("norm", s)] = float((norm_test_predict(model, xs) != ys).mean())
            errs[("tent", s)] = float((tent_predict(model, xs) != ys).mean())
        rows.append((c, errs))
        print(f"{c:18s} sev5 error: source {errs[('source', 5)] * 100:5.1f}  norm_test "
              f"{errs[('norm', 5)] * 100:5.1f}  tent {errs[('tent', 5)] * 100:5.1f}" + (
                  f"   | mean sev1-5 source {np.mean([errs[('source', s)] for s in range(1, 6)]) * 100:5.1f} "
                  f"norm_test {np.mean([errs[('norm', s)] for s in range(1, 6)]) * 100:5.1f}"
                  if args.all_severities else ""), flush=True)
    mean5 = {k: np.mean([e[(k, 5)] for _, e in rows]) for k in ("source", "norm", "tent")}
    meanall = ({k: np.mean([e[(k, s)] for _, e in rows for s in range(1, 6)]) for k in ("source", "norm", "tent")}
               if args.all_severities else None)
    print(f"{'mean':18s} sev5 error: source {mean5['source'] * 100:5.1f}  norm_test {mean5['norm'] * 100:5.1f}  "
          f"tent {mean5['tent'] * 100:5.1f}")
    print(f"evaluation time {time.time() - t1:.0f}s")

    write_readme(args, name, n_params, sd_keys, path, train_time, train_cpu, total_steps, steps_per_epoch,
                 clean_acc, per_class, sub_acc, sub_nt, rows, mean5, meanall, K)


def write_readme(args, name, n_params, sd_keys, path, train_time, train_cpu, total_steps, steps_per_epoch,
                 clean_acc, per_class, sub_acc, sub_nt, rows, mean5, meanall, K):
    n = (args.depth - 4) // 6
    ch = [16, 16 * args.widen, 32 * args.widen, 64 * args.widen]
    L = []
    L.append("# Embedded source model\n")
    L.append(f"`{name}.safetensors` ({os.path.getsize(path):,} bytes): a RobustBench-architecture "
             f"WideResNet-{args.depth}-{args.widen} trained on Fashion-MNIST, the source model of the embedded "
             "FMNIST-C benchmark (`../fashion-mnist-c/`). Made by `scripts/train_embedded_model.py` "
             "(run it from the repository root to reproduce; seeded, CPU).\n")
    L.append("## Architecture\n")
    L.append(f"RobustBench `model_zoo/architectures/wide_resnet.py` `WideResNet(depth={args.depth}, "
             f"widen_factor={args.widen}, num_classes=10, dropRate=0.0, bias_last=True)` with two changes: "
             "the first conv takes **1 input channel** (grey), and pooling is `F.adaptive_avg_pool2d(out, 1)` "
             "(identical to `avg_pool2d(out, 8)` for 32x32 inputs).\n")
    L.append(f"- Blocks per group n = ({args.depth}-4)/6 = {n}; channels {ch}. "
             f"{n_params:,} parameters; {sd_keys} state_dict entries (float32, BN `num_batches_tracked` int64).")
    L.append(f"- `conv1` 1->{ch[0]} 3x3 s1 p1; `block1` {ch[0]}->{ch[1]} s1; `block2` {ch[1]}->{ch[2]} s2; "
             f"`block3` {ch[2]}->{ch[3]} s2; `bn1`({ch[3]}) -> ReLU -> global average pool -> `fc` "
             f"{ch[3]}->10 with bias. Spatial 32 -> 32 -> 16 -> 8 -> 1.")
    L.append("- Pre-activation BasicBlock (`bn1, relu1, conv1, bn2, relu2, conv2`, `convShortcut` 1x1 on the "
             "first block of each group). When in != out the block input is replaced by relu(bn1(x)) and "
             "`convShortcut` is applied to that ACTIVATED tensor; otherwise the identity shortcut uses the raw "
             "input. No ReLU after the addition. All convs bias-free. BN eps 1e-5, momentum 0.1.")
    L.append("- Keys: `conv1.weight`, `block{1,2,3}.layer.{i}.{bn1,bn2}.{weight,bias,running_mean,running_var,"
             "num_batches_tracked}`, `block{1,2,3}.layer.{i}.{conv1,conv2}.weight`, "
             "`block{1,2,3}.layer.0.convShortcut.weight`, `bn1.*`, `fc.weight` (10, "
             f"{ch[3]}), `fc.bias` (10).\n")
    L.append("## Input\n")
    L.append("Fashion-MNIST 28x28 grey zero-padded by 2 pixels per side to 32x32; NCHW float32 = uint8 / 255, "
             "in [0, 1]; **no mean/std normalisation**. FMNIST-C files are NHWC (N,32,32,1) uint8, so the "
             "conversion is the RobustBench one: transpose to NCHW and divide by 255.\n")
    L.append("## Training recipe\n")
    L.append(f"- Data: the 60,000 Fashion-MNIST training images (Debian `dataset-fashion-mnist`), padded to 32x32.")
    L.append("- Augmentation: random 32x32 crop of the image zero-padded by 2 more pixels (shifts of +-2 px), "
             "random horizontal flip (p = 0.5).")
    L.append(f"- SGD, Nesterov momentum 0.9, weight decay {args.wd}, batch {args.batch_size}, "
             f"{total_steps} steps ({total_steps / steps_per_epoch:.2f} epochs), one-cycle LR schedule "
             f"(peak {args.lr}, 25% warm-up from {args.lr / 25:g}, cosine annealing to {args.lr / 25 / 1e3:g}), "
             "cross-entropy, RobustBench weight init (Kaiming-normal fan_out convs).")
    L.append(f"- Seed {args.seed}; PyTorch {torch.__version__} on the CPU with torch.set_num_threads({args.threads}); "
             f"training took {train_time / 60:.1f} min wall-clock ({train_cpu / 60:.1f} min of CPU time "
             "summed over threads) on a 2-core machine shared with compile jobs.\n")
    L.append("## Results\n")
    L.append(f"**Clean test accuracy: {clean_acc * 100:.2f}%** on the full 10,000-image Fashion-MNIST test set "
             f"(eval mode). Per class: " + ", ".join(f"{CLASSES[c]} {per_class[c] * 100:.1f}" for c in range(10)) + ".")
    L.append(f"On the {K} clean test images that FMNIST-C is made from: {sub_acc * 100:.1f}% (source), "
             f"{sub_nt * 100:.1f}% (norm_test).\n")
    L.append(f"Error (%) on FMNIST-C ({K} images per corruption and severity). *source*: the model in eval mode. "
             "*norm_test*: BN layers in train mode without running statistics, i.e. normalised with the "
             "statistics of each test batch of 100 (tent's `norm.py`/\"BN adapt\"). *tent*: one online pass of "
             "TENT (BN affine parameters, Adam lr 1e-3, batch 100, i.e. only 2 updates per block), reset "
             "for every corruption and severity.\n")
    if meanall is None:
        L.append("| corruption | source sev 5 | norm_test sev 5 | tent sev 5 |")
        L.append("|---|---:|---:|---:|")
    else:
        L.append("| corruption | source sev 5 | norm_test sev 5 | tent sev 5 | source sev 1-5 mean | "
                 "norm_test sev 1-5 mean | tent sev 1-5 mean |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
    for c, e in rows:
        line = f"| {c} | {e[('source', 5)] * 100:.1f} | {e[('norm', 5)] * 100:.1f} | {e[('tent', 5)] * 100:.1f} |"
        if meanall is not None:
            line += "".join(f" {np.mean([e[(k, s)] for s in range(1, 6)]) * 100:.1f} |"
                            for k in ("source", "norm", "tent"))
        L.append(line)
    line = (f"| **mean** | **{mean5['source'] * 100:.1f}** | **{mean5['norm'] * 100:.1f}** | "
            f"**{mean5['tent'] * 100:.1f}** |")
    if meanall is not None:
        line += "".join(f" {meanall[k] * 100:.1f} |" for k in ("source", "norm", "tent"))
    L.append(line + "\n")
    L.append("These numbers come from PyTorch; a correct SwiftTTA forward pass should reproduce the source and "
             "norm_test columns up to float rounding (a few images may flip where logits are nearly tied).\n")
    L.append("## Licence\n")
    L.append("The weights are derived from Fashion-MNIST (c) Zalando SE, MIT licence "
             "(https://github.com/zalandoresearch/fashion-mnist).\n")
    with open(os.path.join(os.path.dirname(path), "README.md"), "w") as f:
        f.write("\n".join(L))
    print("wrote", os.path.join(os.path.dirname(path), "README.md"))


if __name__ == "__main__":
    main()
