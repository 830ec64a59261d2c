#!/usr/bin/env python3
"""PyTorch counterpart of `tta-bench steps`: the time of one adaptation step per method on the CPU.

Per model configuration (default: WideResNet-28-10 at batch 200, WideResNet-16-2 at batch 64) and
method, one step is timed after `--warmup` untimed ones, `--runs` times, on a seeded
random-initialised RobustBench WideResNet (scripts/make_fixtures.py, RobustBench's initialisation)
and seeded uniform inputs (N, 3, 32, 32), 10 classes. The methods follow the reference code
(mariodoebler/test-time-adaptation, CIFAR-10 defaults):

  source       eval mode, no_grad
  norm_test    train-mode BN (batch statistics, running buffers updated), no_grad
  tent         batch-statistics BN, gradients only for BN affine parameters, mean softmax entropy,
               Adam(lr 1e-3, betas (0.9, 0.999)): forward + backward + step
  cotta        student forward (batch-statistics BN, all parameters trainable), anchor and teacher
               forwards, 32 augmented teacher forwards on every batch (as `tta-bench steps` forces with
               alwaysAugment), soft-target CE, Adam step, EMA teacher (0.999), stochastic restore
               (p = 0.01, every weight/bias element)
  cotta-noaug  cotta without the augmented passes

CoTTA's augmentation is its CIFAR pipeline with torchvision's functional ops (one parameter draw per
batch, as torchvision does for a batch tensor): ColorJitterPro's five ops in random order, edge pad,
affine (bilinear), Gaussian blur 5x5, centre crop, flip, N(0, 0.005^2) noise, clip. The ops are
`run_pipeline` of scripts/make_augmentation_fixtures.py (its self-check is skipped here). If
torchvision is missing, a stand-in of flip + noise is used and the report says so.

Each (model, method) runs in a fresh subprocess (this script re-invokes itself), so that the peak
resident set size (getrusage ru_maxrss, process-wide) is per method; it includes the interpreter and
torch's libraries (`resident_before_bytes` is the RSS before the model is built).

    python3 benchmarks/pytorch_reference.py [--model wideresnet-D-W[,...]] [--batch N[,...]]
        [--methods source,norm_test,tent,cotta,cotta-noaug] [--warmup W] [--runs R] [--threads T]
        [--seed S] [--json FILE]

The JSON has the shape `tta-bench steps --json` writes.
"""
import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from make_fixtures import WideResNet  # noqa: E402
from make_method_fixtures import bn_affine_only, set_bn_batch_stats, softmax_entropy  # noqa: E402

METHODS = ["source", "norm_test", "tent", "cotta", "cotta-noaug"]
DEFAULTS = [("wideresnet-28-10", 200), ("wideresnet-16-2", 64)]
# CIFAR-10 reference defaults (mariodoebler/test-time-adaptation cfgs/cifar10_c/*.yaml, conf.py).
LR, BETAS = 1e-3, (0.9, 0.999)
N_AUG, AP, RST, MT, NOISE_STD = 32, 0.92, 0.01, 0.999, 0.005

try:
    import make_augmentation_fixtures as augfix  # noqa: E402
    augfix.check_against_transform_classes = lambda stages, p: None  # a parity self-check, not part of CoTTA
    AUGMENTATION = ("CoTTA CIFAR pipeline with torchvision functional ops (scripts/make_augmentation_fixtures.py "
                    "run_pipeline), one draw per batch, noise std 0.005")
except ImportError:  # torchvision missing
    augfix = None
    AUGMENTATION = "STAND-IN: random horizontal flip + N(0, 0.005^2) noise + clip (torchvision not installed)"


def parse_configs(models, batches):
    """Same rules as tta-bench steps: one batch size for all models or one per model."""
    sizes = None
    if batches is not None:
        sizes = [int(b) for b in batches.split(",")]
        if any(b <= 0 for b in sizes):
            sys.exit(f"pytorch_reference.py: --batch needs positive integers, got '{batches}'")
    if models is None:
        if sizes is None:
            return list(DEFAULTS)
        if len(sizes) not in (1, len(DEFAULTS)):
            sys.exit(f"pytorch_reference.py: --batch: give one size or one per default model ({len(DEFAULTS)})")
        return [(m, sizes[0] if len(sizes) == 1 else sizes[i]) for i, (m, _) in enumerate(DEFAULTS)]
    names = [m.lower() for m in models.split(",")]
    if sizes is not None and len(sizes) not in (1, len(names)):
        sys.exit(f"pytorch_reference.py: --batch: give one size or one per model ({len(names)})")
    out = []
    for i, given in enumerate(names):
        depth, widen = parse_model(given)
        name = f"wideresnet-{depth}-{widen}"
        fallback = dict(DEFAULTS).get(name, 64)
        out.append((name, fallback if sizes is None else sizes[0] if len(sizes) == 1 else sizes[i]))
    return out


def parse_model(name):
    parts = name.lower().split("-")
    try:
        if len(parts) == 3 and parts[0] in ("wideresnet", "wrn"):
            d, w = int(parts[1]), int(parts[2])
            if d >= 10 and (d - 4) % 6 == 0 and w >= 1:
                return d, w
    except ValueError:
        pass
    sys.exit(f"pytorch_reference.py: --model: expected wideresnet-<depth>-<widen> with depth 6n+4, got '{name}'")


def make_model(name, seed):
    depth, widen = parse_model(name)
    torch.manual_seed(seed)
    return WideResNet(depth=depth, num_classes=10, widen_factor=widen)


def make_input(batch, seed):
    g = torch.Generator().manual_seed(seed + 0x5EED)
    return torch.rand(batch, 3, 32, 32, generator=g)


class Phases:
    """Wall time per phase, as the Swift Adaptor's PhaseTimer (forward, backward, update)."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, phase):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def augment(x):
    """One draw of CoTTA's CIFAR augmentation for the whole batch."""
    if augfix is None:
        y = x.flip(3) if torch.rand(()) < 0.5 else x
        return (y + torch.randn_like(y) * NOISE_STD).clamp(0, 1)
    size = x.shape[-1]
    u = lambda lo, hi: float(torch.empty(()).uniform_(lo, hi))  # noqa: E731
    max_t = size * 2 / 16  # RandomAffine translate 1/16 of the edge-padded canvas (2 x size)
    p = augfix.params(torch.randperm(5).tolist(), u(0.6, 1.4), u(0.7, 1.3), u(0.5, 1.5), u(-0.06, 0.06),
                      u(0.7, 1.3), u(-15, 15), round(u(-max_t, max_t)), round(u(-max_t, max_t)), u(0.9, 1.1),
                      u(0.001, 0.5), bool(torch.rand(()) < 0.5))
    y = augfix.run_pipeline(x, p)["output"]
    return (y + torch.randn_like(y) * NOISE_STD).clamp(0, 1)


def setup(name, model):
    """Configures `model` for the method; returns step(x, phases) -> output (before the update)."""
    if name == "source":
        model.eval()

        def step(x, ph):
            with ph("forward"), torch.no_grad():
                return model(x)
        return step

    if name == "norm_test":
        model.train()

        def step(x, ph):
            with ph("forward"), torch.no_grad():
                return model(x)
        return step

    if name == "tent":
        model.train()
        opt = torch.optim.Adam(bn_affine_only(model), lr=LR, betas=BETAS, weight_decay=0.0)

        def step(x, ph):
            with ph("forward"):
                y = model(x)
            loss = softmax_entropy(y).mean(0)
            with ph("backward"):
                loss.backward()
            with ph("update"):
                opt.step()
                opt.zero_grad()
            return y.detach()
        return step

    if name in ("cotta", "cotta-noaug"):
        n_aug = N_AUG if name == "cotta" else 0
        model.train()
        model.requires_grad_(False)
        set_bn_batch_stats(model)
        model.requires_grad_(True)
        params = [p for n, p in model.named_parameters() if n.endswith("weight") or n.endswith("bias")]
        opt = torch.optim.Adam(params, lr=LR, betas=BETAS, weight_decay=0.0)
        source_state = copy.deepcopy(model.state_dict())
        teacher = copy.deepcopy(model)
        anchor = copy.deepcopy(model)
        for p in list(teacher.parameters()) + list(anchor.parameters()):
            p.detach_()

        def step(x, ph):
            with ph("forward"):
                s = model(x)
                with torch.no_grad():
                    confidence = anchor(x).softmax(1).max(1)[0].mean(0)
                    t = teacher(x)
                    if n_aug > 0:  # always run (alwaysAugment); used when the anchor is unconfident
                        augmented = torch.stack([teacher(augment(x)) for _ in range(n_aug)]).mean(0)
                        if confidence < AP:
                            t = augmented
            loss = (-(t.softmax(1) * s.log_softmax(1)).sum(1)).mean(0)
            with ph("backward"):
                loss.backward()
            with ph("update"):
                opt.step()
                opt.zero_grad()
                with torch.no_grad():
                    for tp, sp in zip(teacher.parameters(), model.parameters()):
                        tp.data[:] = MT * tp[:].data[:] + (1 - MT) * sp[:].data[:]
                    for nm, m in model.named_modules():  # stochastic restore, as the reference
                        for npp, p in m.named_parameters(recurse=False):
                            if npp in ("weight", "bias") and p.requires_grad:
                                mask = (torch.rand(p.shape) < RST).float()
                                p.data = source_state[f"{nm}.{npp}"] * mask + p * (1.0 - mask)
            return t
        return step

    sys.exit(f"pytorch_reference.py: unknown method '{name}'; known: {', '.join(METHODS)}")


def resident_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(args):
    """Times one method on one model in this (fresh) process and writes its record to --json."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (model_name, batch), = parse_configs(args.model, args.batch)
    method = args.methods
    before = resident_bytes()
    x = make_input(batch, args.seed)
    model = make_model(model_name, args.seed)
    step = setup(method, model)
    ph = Phases()
    for _ in range(args.warmup):
        out = step(x, ph)
    ph.seconds.clear()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = step(x, ph)
        times.append(time.perf_counter() - t0)
    if not torch.isfinite(out).all():
        sys.exit(f"pytorch_reference.py: {method} on {model_name}: the output has NaN or infinity")
    phases = {k: v / args.runs for k, v in ph.seconds.items()}
    phases["other"] = max(0.0, statistics.fmean(times) - sum(phases.values()))
    record = {
        "model": model_name, "batch": batch, "method": method, "warmup": args.warmup, "runs": args.runs,
        "seconds_min": min(times), "seconds_median": statistics.median(times),
        "images_per_second_min_time": batch / min(times), "images_per_second_median": batch / statistics.median(times),
        "phase_seconds": phases,
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "resident_before_bytes": before, "peak_scope": "method",
        "augmented_passes": N_AUG if method == "cotta" else 0,
    }
    with open(args.json, "w") as f:
        json.dump(record, f)


def validate(model_name, batch, seed):
    """Cheap sanity check: one `source` step equals the plain eval-mode forward (at most 8 images)."""
    x = make_input(min(batch, 8), seed)
    model = make_model(model_name, seed)
    with torch.no_grad():
        plain = model.eval()(x)
    stepped = setup("source", make_model(model_name, seed))(x, Phases())
    diff = (plain - stepped).abs().max().item()
    if not torch.isfinite(plain).all() or diff > 1e-6 * max(1.0, plain.abs().max().item()):
        sys.exit(f"pytorch_reference.py: validation: source step differs from the plain forward by {diff}")
    print(f"validation {model_name}: source step == plain forward on {x.shape[0]} images (max |diff| {diff:g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="wideresnet-D-W, comma-separated (default: wideresnet-28-10,wideresnet-16-2)")
    ap.add_argument("--batch", help="batch size, one or one per model (default: 200 for WRN-28-10, else 64)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup < 0 or args.runs < 1 or args.threads < 1:
        sys.exit("pytorch_reference.py: --warmup must be >= 0, --runs and --threads >= 1")
    if args.worker:
        return worker(args)

    methods = args.methods.split(",")
    for m in methods:
        if m not in METHODS:
            sys.exit(f"pytorch_reference.py: unknown method '{m}'; known: {', '.join(METHODS)}")
    configs = parse_configs(args.model, args.batch)
    torch.set_num_threads(args.threads)
    print(f"steps (PyTorch {torch.__version__}, CPU): one step per method, random-initialised model (seed {args.seed}), "
          f"inputs 3x32x32, 10 classes;")
    print(f"       {args.threads} thread(s), warm-up {args.warmup}, {args.runs} timed run(s); img/s from the fastest "
          f"and the median run; phases in ms per step; each method in a fresh process")
    print(f"       cotta: {N_AUG} augmented teacher passes every batch; cotta-noaug: none")
    print(f"       augmentation: {AUGMENTATION}")
    header = (f"{'model':>18}{'batch':>6}{'method':>12}{'ms min':>10}{'img/s':>9}{'median':>9}"
              f"{'fwd':>9}{'bwd':>9}{'upd':>9}{'other':>8}{'peak MiB':>10}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, batch in configs:
            validate(model_name, batch, args.seed)
            print(header)
            print("-" * len(header))
            for method in methods:
                path = os.path.join(tmp, "record.json")
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model_name, "--batch", str(batch),
                       "--methods", method, "--warmup", str(args.warmup), "--runs", str(args.runs),
                       "--threads", str(args.threads), "--seed", str(args.seed), "--json", path]
                subprocess.run(cmd, check=True)
                with open(path) as f:
                    r = json.load(f)
                results.append(r)
                ph = r["phase_seconds"]
                print(f"{model_name:>18}{batch:>6}{method:>12}{r['seconds_min'] * 1e3:>10.1f}"
                      f"{r['images_per_second_min_time']:>9.1f}{r['images_per_second_median']:>9.1f}"
                      f"{ph.get('forward', 0) * 1e3:>9.1f}{ph.get('backward', 0) * 1e3:>9.1f}"
                      f"{ph.get('update', 0) * 1e3:>9.1f}{ph.get('other', 0) * 1e3:>8.1f}"
                      f"{r['peak_memory_bytes'] / 1048576:>10.1f}", flush=True)
            print()
    if args.json:
        report = {"benchmark": "steps", "implementation": "pytorch", "threads": args.threads,
                  "kernel": f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})",
                  "augmentation": AUGMENTATION, "seed": args.seed, "results": results}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
