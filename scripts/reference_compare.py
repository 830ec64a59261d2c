#!/usr/bin/env python3
"""Run the PyTorch reference (mariodoebler/test-time-adaptation) on SwiftTTA's embedded benchmark.

Same model, same stream, the reference's own method classes: this is the other half of the
side-by-side comparison with `tta compare` (see scripts/compare_results.py).

    python3 scripts/reference_compare.py --reference-dir /work/refs/test-time-adaptation \
        --json benchmarks/results/reference_fmnist_c.json

The reference code is NOT part of this repository: `--reference-dir` is a checkout of
https://github.com/mariodoebler/test-time-adaptation; its `classification/` folder is put on
sys.path at run time. It needs `yacs` and `iopath` (its conf.py imports them); torch, torchvision,
numpy and safetensors are the only other packages used.

What runs, per method (as the reference's test_time.py does):
  * cfg: the reference's `conf.cfg` (classification/conf.py), reset to its defaults, merged with
    `cfgs/cifar10_c/<method>.yaml` (source.yaml; norm_test.yaml -> MODEL.ADAPTATION bntest;
    norm_alpha.yaml -> bnalpha, BN.ALPHA 0.1; norm_ema.yaml -> bnema; tent.yaml; cotta.yaml), then
    overridden with TEST.BATCH_SIZE, RNG_SEED, CORRUPTION.TYPE, CORRUPTION.SEVERITY, SETTING,
    TEST.NUM_WORKERS (= SwiftTTA's CLI defaults on the embedded benchmark, or the flags). Note that
    norm_alpha.yaml sets TEST.BATCH_SIZE 1 (the reference's single-sample sliding-window path); like
    every other method it runs here at the common batch size, as `tta compare` runs it.
    CORRUPTION.DATASET stays cifar10_c: the method code keys on it (img_size (32, 32) for CoTTA's
    augmentations, the CIFAR soft-target cross-entropy of CoTTA).
  * seeding as conf.load_cfg_from_args: torch.manual_seed, np.random.seed, random.seed (RNG_SEED),
    before the model is built (the RobustBench constructor's Kaiming init consumes the torch RNG, as
    in the reference, then the weights are loaded).
  * model: the reference's own RobustBench WideResNet class
    (classification/robustbench/model_zoo/architectures/wide_resnet.py, loaded by file path), depth
    and width read from the state dict, its 3-channel `conv1` replaced by a 1-channel one (P5), the
    state dict from the .safetensors file loaded strictly, `model_preprocess = None` (RobustBench
    models have none), as test_time.py attaches it.
  * method: `ADAPTATION_REGISTRY.get(cfg.MODEL.ADAPTATION)(cfg=cfg, model=base_model, num_classes=10)`
    -> methods.source.Source, methods.norm.BNTest, methods.tent.Tent, methods.cotta.CoTTA,
    methods.eata.EATA (eta.yaml, eata.yaml; rdumb.yaml: FISHER_ALPHA 0, RESET_AFTER_NUM_UPDATES 1000),
    methods.rotta.RoTTA, methods.roid.ROID, methods.lame.LAME, methods.sar.SAR, methods.rmt.RMT.
  * source data (eata's Fisher term, rmt's prototypes, warm-up and replay): --source-data, the same folder
    `tta --source-data` reads (default: the embedded data/fashion-mnist-source, Fashion-MNIST training
    images), through the P7 loader. Its draws (python's random.sample, the DataLoader's torch shuffle)
    are the reference's and differ from SwiftTTA's seeded draws, so eata and rmt agree in distribution,
    not image for image (compare with --method-seed runs for the spread).
  * --batch-size 1 with --window-length W: TEST.WINDOW_LENGTH, the base class's sliding window.
  * stream: per domain `random.seed(RNG_SEED); np.random.seed(RNG_SEED); random.shuffle(samples)` exactly as
    datasets/data_loading.get_test_loader (or file order with --order file); samples are
    `[x, y, domain]` with x = uint8 NHWC rows [(s-1)*K, s*K) of <corruption>.npy -> float32 / 255,
    y = labels[:K] (RobustBench's load_corruptions_cifar, whose hard-coded K = 10000 is the only
    reason its loader is not called directly); batches through a torch DataLoader (shuffle=False,
    drop_last=False, num_workers=0: the iterator draws its base seed from the torch RNG, as the
    reference's loader does) over the reference's own robustbench/loaders.CustomCifarDataset
    (transform=None: `torch.tensor(x.transpose(2, 0, 1))`), loaded by file path.
  * --setting correlated: after the shuffle, the samples sorted by label (`samples.sort(key=lambda x: x[1])`),
    or with --dirichlet d > 0 put in the reference's own `sort_by_dirichlet(d, samples)` order (taken out of
    datasets/data_loading.py, whose imports need more than this script installs), as get_test_loader does.
  * continual: `model.reset()` before the first domain only; error per domain = 1 - accuracy of
    `output.argmax(1)` where output is what the method returns for the batch (utils/eval_utils
    get_accuracy); for CoTTA that is the teacher's (augmentation-averaged) prediction.

Long runs (--checkpoint PATH, --resume PATH; one method of source, norm_test, norm_alpha, tent, cotta): the
run's state is saved every --checkpoint-every batches and at every domain boundary (the method module's state
dict, i.e. the model and CoTTA's teacher and anchor, as the entries that differ from its state when set up
from the same weights; the optimizer; torch's, numpy's and python's RNG states;
the position, the counts and the clock), and a resumed run ends in the same state as an uninterrupted one
(`finalState` in the results, a SHA-256 over the final state dict, is equal) with its seconds carried on.

Run-time patches (nothing in --reference-dir is modified):
  P1. `models.model` is replaced by a stub module holding only `ResNetDomainNet126` (an empty class):
      methods/base.py imports it for an isinstance test in copy_model, and the real module imports
      timm, open_clip and the bundled robustbench (tqdm, requests, ...), none needed here.
  P2. `methods` is registered as a bare package (its __path__ only), so `methods/__init__.py`, which
      imports all 22 methods (RMT, TPT, ... need models.model's other functions and CLIP), does not
      run; methods.source, methods.norm, methods.tent, methods.cotta are imported one by one and
      register themselves in ADAPTATION_REGISTRY as usual.
  P3. CUDA: none needed with this reference version: TTAMethod sets `self.device = "cuda" if
      torch.cuda.is_available() else "cpu"` and the four methods only use `.to(self.device)`;
      MIXED_PRECISION is False so torch.cuda.amp is never entered. As a guard, `torch.Tensor.cuda`
      and `torch.nn.Module.cuda` are replaced by no-ops that count their calls; the counts are
      printed (expected 0).
  P4. None for CoTTA's augmentations in this reference version: transforms_cotta.py already calls
      `RandomAffine(..., interpolation=PIL.Image.BILINEAR, fill=0)` (older versions used
      resample=/fillcolor=, which torchvision >= 0.13 rejects), and torchvision 0.29 accepts it.
      `--check-augmentations` verifies on 1-channel tensors that ColorJitterPro runs and that
      adjust_saturation / adjust_hue are the identity on 1 channel (torchvision returns 1-channel
      images unchanged; the draws are still made), so no patch is needed there either.
  P5. The reference WideResNet hard-codes `nn.Conv2d(3, 16, ...)` as conv1; after construction it is
      replaced by `nn.Conv2d(1, 16, 3, 1, 1, bias=False)` (the checkpoint's conv1.weight is
      (16, 1, 3, 3)); every other module is the reference's. Its forward is unchanged.
  P7. `datasets.data_loading` is replaced by a stub (the real module imports webdataset and the ImageNet
      helpers) whose get_source_loader does what the reference's does for cifar10 (SOURCE.NUM_SAMPLES
      drawn with random.sample, a DataLoader with shuffle=True) on --source-data instead of
      torchvision's CIFAR10. RMT's CKPT_DIR (prototype and warm-up cache) is a fresh temporary folder.
  P9. `models.model.split_up_model` (LAME's and RMT's feature extractor and classifier) is the stub's
      copy of the reference's "Standard" / cifar10_c branch: the model's children but the last, then
      AvgPool2d(8) and Flatten, as encoder; `fc` as classifier. Any other architecture is refused.
  P8. RoTTA: in this reference version the fp32 branch of forward_and_adapt calls
      `self.loss_calculation(x)` on a method that takes no argument (TypeError at the first update); the
      patched method ignores the argument. Nothing else in RoTTA changes.
  P6. stdout: the reference prints from AlphaBatchNorm.adapt_model ("| Found N modules ..."); method
      construction runs with stdout redirected to stderr so that stdout holds only the table.
"""

import argparse
import json
import os
import random
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

STANDARD_CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                        "elastic_transform", "pixelate", "jpeg_compression"]
# SwiftTTA's `tta compare` defaults on the embedded benchmark (Sources/TTACLI/Options.swift,
# Experiment.swift, TTAData/BenchmarkStream.swift): batch 50, shuffled order, seed 1, severity 5,
# the 15 standard corruptions, continual setting (one reset before the first batch).
CLI_DEFAULTS = dict(batch_size=50, order="shuffled", seed=1, severity=5, setting="continual")
METHOD_YAML = {"source": "source.yaml", "norm_test": "norm_test.yaml", "norm_alpha": "norm_alpha.yaml",
               "norm_ema": "norm_ema.yaml", "tent": "tent.yaml", "cotta": "cotta.yaml",
               "rdumb": "rdumb.yaml", "rotta": "rotta.yaml", "roid": "roid.yaml", "lame": "lame.yaml",
               "eta": "eta.yaml", "eata": "eata.yaml", "sar": "sar.yaml", "rmt": "rmt.yaml"}
# Methods whose reference class reads the source loader (EATA's Fisher term; RMT's prototypes, warm-up, replay).
SOURCE_METHODS = {"eata", "rmt"}

# Methods whose whole state is their modules' state dict and an optimizer (--checkpoint).
CHECKPOINTABLE = {"source", "norm_test", "norm_alpha", "tent", "cotta"}
CUDA_CALLS = {"Tensor.cuda": 0, "Module.cuda": 0}
SOURCE_DATA = {"dir": None, "loaders": 0}


def install_patches(reference_dir):
    """P1-P3 (see the module docstring). Returns the reference's classification folder."""
    cls_dir = os.path.join(reference_dir, "classification")
    if not os.path.isfile(os.path.join(cls_dir, "methods", "tent.py")):
        sys.exit(f"--reference-dir {reference_dir}: no classification/methods/tent.py there")
    sys.path.insert(0, cls_dir)

    # P1: models.model stub (the real models/ folder stays importable as a package).
    models_pkg = types.ModuleType("models")
    models_pkg.__path__ = [os.path.join(cls_dir, "models")]
    model_stub = types.ModuleType("models.model")

    class ResNetDomainNet126(torch.nn.Module):  # only used in isinstance() by TTAMethod.copy_model
        pass

    model_stub.ResNetDomainNet126 = ResNetDomainNet126

    def split_up_model(model, arch_name, dataset_name):  # P9: the reference's "Standard" / cifar10_c branch
        if arch_name != "Standard" or dataset_name not in {"cifar10", "cifar10_c"}:
            raise RuntimeError(f"reference_compare.py: split_up_model stub covers Standard/cifar10_c only ({arch_name}, {dataset_name})")
        encoder = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.AvgPool2d(kernel_size=8, stride=8), torch.nn.Flatten())
        return encoder, model.fc

    model_stub.split_up_model = split_up_model
    models_pkg.model = model_stub
    sys.modules["models"] = models_pkg
    sys.modules["models.model"] = model_stub

    # P7: datasets.data_loading stub (the real module imports webdataset and the ImageNet helpers). Its
    # get_source_loader does what the reference's does for cifar10 (SOURCE.NUM_SAMPLES / PERCENTAGE drawn
    # with python's random.sample, then a DataLoader with shuffle=True, drop_last=False), on the
    # --source-data folder (images.npy uint8 NHWC / 255, labels.npy) instead of torchvision's CIFAR10.
    datasets_pkg = types.ModuleType("datasets")
    datasets_pkg.__path__ = [os.path.join(cls_dir, "datasets")]
    loading_stub = types.ModuleType("datasets.data_loading")

    def get_source_loader(dataset_name, adaptation, preprocess, data_root_dir, batch_size, num_samples=-1,
                          percentage=1.0, **unused):
        if SOURCE_DATA["dir"] is None:
            raise RuntimeError("reference_compare.py: no --source-data (P7)")
        images = np.load(os.path.join(SOURCE_DATA["dir"], "images.npy"))
        labels = np.load(os.path.join(SOURCE_DATA["dir"], "labels.npy")).astype(np.int64)
        if percentage < 1.0 or num_samples >= 0:
            n = images.shape[0]
            reduced = min(num_samples, n) if num_samples > 0 else int(np.ceil(n * percentage))
            inds = random.sample(range(0, n), reduced)
            images, labels = images[inds], labels[inds]
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255  # ToTensor
        dataset = torch.utils.data.TensorDataset(x, torch.from_numpy(labels))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=False)
        SOURCE_DATA["loaders"] += 1
        return dataset, loader

    loading_stub.get_source_loader = get_source_loader
    datasets_pkg.data_loading = loading_stub
    sys.modules["datasets"] = datasets_pkg
    sys.modules["datasets.data_loading"] = loading_stub

    # P2: the methods package without its __init__.py.
    methods_pkg = types.ModuleType("methods")
    methods_pkg.__path__ = [os.path.join(cls_dir, "methods")]
    sys.modules["methods"] = methods_pkg

    # P3: counting no-op guards for .cuda().
    def tensor_cuda(self, *a, **k):
        CUDA_CALLS["Tensor.cuda"] += 1
        return self

    def module_cuda(self, *a, **k):
        CUDA_CALLS["Module.cuda"] += 1
        return self

    torch.Tensor.cuda = tensor_cuda
    torch.nn.Module.cuda = module_cuda
    return cls_dir


def import_reference():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation in cotta.py
        import methods.source  # noqa: F401  (registers Source)
        import methods.norm  # noqa: F401  (registers BNTest, BNAlpha, BNEMA)
        import methods.tent  # noqa: F401
        import methods.cotta  # noqa: F401
        import methods.eata  # noqa: F401  (RDumb: cfgs/*/rdumb.yaml runs EATA with periodic resets)
        import methods.rotta  # noqa: F401
        import methods.roid  # noqa: F401
        import methods.lame  # noqa: F401
        import methods.sar  # noqa: F401
        import methods.rmt  # noqa: F401
    # P8: RoTTA's fp32 branch calls `self.loss_calculation(x)`, but the method takes no argument (a
    # TypeError at the first update in this reference version); the argument is dropped, as intended.
    rotta_loss = methods.rotta.RoTTA.loss_calculation
    methods.rotta.RoTTA.loss_calculation = lambda self, *unused: rotta_loss(self)
    import conf
    from utils.registry import ADAPTATION_REGISTRY
    return conf, ADAPTATION_REGISTRY


def reference_function(reference_dir, name):
    """A function of the reference's datasets/data_loading.py (scripts/make_dirichlet_fixtures.py reads it out)."""
    from make_dirichlet_fixtures import reference_function as read_function
    return read_function(reference_dir, name)


def load_reference_file(cls_dir, relpath, name):
    """Imports one file of the reference by path (robustbench/__init__.py pulls in requests, tqdm, ...)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(cls_dir, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(cls_dir, weights):
    """The reference's RobustBench WideResNet with the checkpoint's depth, width, classes, channels (P5)."""
    from safetensors.torch import load_file
    wrn = load_reference_file(cls_dir, "robustbench/model_zoo/architectures/wide_resnet.py", "reference_wide_resnet")
    state = load_file(weights)
    depth = 4 + 6 * sum(1 for k in state if k.startswith("block1.layer.") and k.endswith(".conv1.weight"))
    widen = state["block1.layer.0.conv1.weight"].shape[0] // 16
    in_ch = state["conv1.weight"].shape[1]
    classes = state["fc.weight"].shape[0]
    model = wrn.WideResNet(depth=depth, num_classes=classes, widen_factor=widen)
    if in_ch != model.conv1.in_channels:  # P5
        model.conv1 = torch.nn.Conv2d(in_ch, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.model_preprocess = None  # test_time.py: base_model.model_preprocess = model_preprocess (None here)
    return model, f"wideresnet-{depth}-{widen} ({in_ch}-channel input)", classes


def load_domain(data_dir, corruption, severity, labels):
    """RobustBench load_corruptions_cifar + create_cifarc_dataset for one corruption, K rows per severity."""
    images_all = np.load(os.path.join(data_dir, corruption + ".npy"))
    k = images_all.shape[0] // 5
    images = images_all[(severity - 1) * k: severity * k]
    x = np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 255   # NCHW
    x = x.transpose((0, 2, 3, 1))                                      # create_cifarc_dataset: back to NHWC
    y = labels[:k]
    return [[x[i], y[i], corruption] for i in range(k)]


def make_cfg(conf, cls_dir, method, args):
    conf.reset_cfg()
    cfg = conf.cfg
    cfg.defrost()
    conf.merge_from_file(os.path.join(cls_dir, "cfgs", "cifar10_c", METHOD_YAML[method]))
    cfg.merge_from_list(["TEST.BATCH_SIZE", args.batch_size, "RNG_SEED", args.seed,
                         "CORRUPTION.TYPE", args.corruptions, "CORRUPTION.SEVERITY", [args.severity],
                         "SETTING", args.setting, "TEST.DELTA_DIRICHLET", args.dirichlet, "TEST.NUM_WORKERS", 0])
    # RMT caches its prototypes and warm-up under CKPT_DIR, keyed by dataset and architecture only: a fresh
    # folder per run, so that no cache from another model or source set is read.
    cfg.merge_from_list(["CKPT_DIR", args.ckpt_dir])
    if args.window_length is not None:
        cfg.merge_from_list(["TEST.WINDOW_LENGTH", args.window_length])
    if method == "cotta" and args.augmentations is not None:
        cfg.merge_from_list(["TEST.N_AUGMENTATIONS", args.augmentations])
    cfg.freeze()
    return cfg


def run_method(method, args, conf, registry, cls_dir, labels, log):
    import contextlib
    loaders = load_reference_file(cls_dir, "robustbench/loaders.py", "reference_loaders")
    cfg = make_cfg(conf, cls_dir, method, args)
    # Read out of the reference once per method, not once per domain.
    sort_by_dirichlet = reference_function(args.reference_dir, "sort_by_dirichlet") if cfg.TEST.DELTA_DIRICHLET > 0. else None
    # conf.load_cfg_from_args: seeding before the model is created (--method-seed: another torch seed,
    # the only generator the four methods draw from; the stream's random/np.random stay RNG_SEED)
    torch.manual_seed(cfg.RNG_SEED if args.method_seed is None else args.method_seed)
    np.random.seed(cfg.RNG_SEED)
    random.seed(cfg.RNG_SEED)
    base_model, arch, num_classes = build_model(cls_dir, args.weights)
    with contextlib.redirect_stdout(sys.stderr):  # P6
        model = registry.get(cfg.MODEL.ADAPTATION)(cfg=cfg, model=base_model, num_classes=num_classes)
    log(f"{method}: {type(model).__module__}.{type(model).__name__} (cfgs/cifar10_c/{METHOD_YAML[method]}; "
        f"ADAPTATION={cfg.MODEL.ADAPTATION} BATCH_SIZE={cfg.TEST.BATCH_SIZE} OPTIM={cfg.OPTIM.METHOD} "
        f"LR={cfg.OPTIM.LR} BETA={cfg.OPTIM.BETA} WD={cfg.OPTIM.WD} STEPS={cfg.OPTIM.STEPS}"
        + (f" MT={cfg.M_TEACHER.MOMENTUM} RST={cfg.COTTA.RST} AP={cfg.COTTA.AP} N_AUG={cfg.TEST.N_AUGMENTATIONS}"
           if method == "cotta" else "") + (f" BN.ALPHA={cfg.BN.ALPHA}" if method == "norm_alpha" else "")
        + f"; {arch}, device {model.device})")
    domains = []
    # --checkpoint / --resume: the run's position, results so far and clock, with the method's whole state
    # (its modules' state dict: model, and CoTTA's teacher and anchor; the optimizer; the RNG states). The
    # state dict is stored as the entries that differ from the method's state as set up here, from the same
    # weights (the identity checks them): TENT's checkpoint of a WRN-28-10 is its BN affine parameters, not
    # 146 MB of unchanged convolution weights. What differs is found by digest, so that checkpointing keeps
    # no copy of the model (which would add to the peak memory the timing runs measure).
    initial_digests = {k: tensor_digest(v) for k, v in model.state_dict().items()} if args.checkpoint else {}
    ckpt = torch.load(args.resume, weights_only=False) if args.resume else None
    if ckpt is not None:
        if ckpt["method"] != method or ckpt["identity"] != run_identity(args):
            sys.exit(f"--resume {args.resume}: the checkpoint is of another run "
                     f"({ckpt['method']}, {ckpt['identity']}; now {method}, {run_identity(args)})")
        domains = ckpt["domains"]
        log(f"{method}: resuming at domain {ckpt['domain'] + 1}, batch {ckpt['batch'] + 1}, {ckpt['seconds']:.1f}s into the run")
    seconds_before = ckpt["seconds"] if ckpt else 0.0
    start = time.time()

    def clock():
        return seconds_before + time.time() - start

    def rng_states():
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}

    def restore_rng(states):
        torch.set_rng_state(states["torch"]); np.random.set_state(states["numpy"]); random.setstate(states["random"])

    def save_checkpoint(i_dom, batch, correct, n):
        state = {"method": method, "identity": run_identity(args), "domain": i_dom, "batch": batch,
                 "correct": correct, "n": n, "domains": domains, "seconds": clock(), "rng": rng_states(),
                 "state_dict_changed": {k: v for k, v in model.state_dict().items() if initial_digests.get(k) != tensor_digest(v)},
                 "optimizer": model.optimizer.state_dict() if getattr(model, "optimizer", None) is not None else None}
        tmp = args.checkpoint + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, args.checkpoint)

    batches_done = 0
    for i_dom, corruption in enumerate(cfg.CORRUPTION.TYPE):
        if ckpt is not None and i_dom < ckpt["domain"]:
            continue
        resuming = ckpt is not None and i_dom == ckpt["domain"]
        if resuming:
            changed = ckpt.get("state_dict_changed", ckpt.get("state_dict"))   # "state_dict": whole (older files)
            if changed is None:
                sys.exit(f"--resume {args.resume}: the checkpoint holds no model state (state_dict_changed)")
            unknown = sorted(set(changed) - set(initial_digests))
            if unknown:
                sys.exit(f"--resume {args.resume}: the checkpoint holds state {unknown[:3]} that {method} does not have")
            model.load_state_dict(changed, strict=False)   # the rest is as set up: nothing has run yet
            if ckpt["optimizer"] is not None:
                model.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt["batch"] == 0:
                restore_rng(ckpt["rng"])   # a domain boundary: the domain's reseeding and the loader's draws are still to come
        if (i_dom == 0 or "reset_each_shift" in cfg.SETTING) and not (resuming and ckpt["batch"] > 0):
            model.reset()
        for severity in cfg.CORRUPTION.SEVERITY:
            # datasets/data_loading.get_test_loader
            random.seed(cfg.RNG_SEED)
            np.random.seed(cfg.RNG_SEED)
            samples = load_domain(args.data_dir, corruption, severity, labels)
            if args.order == "shuffled":
                random.shuffle(samples)
            if "correlated" in cfg.SETTING:
                if cfg.TEST.DELTA_DIRICHLET > 0.:
                    samples = sort_by_dirichlet(cfg.TEST.DELTA_DIRICHLET, samples=samples)
                else:
                    samples.sort(key=lambda x: x[1])
            loader = torch.utils.data.DataLoader(loaders.CustomCifarDataset(samples), batch_size=cfg.TEST.BATCH_SIZE,
                                                 shuffle=False, num_workers=0, drop_last=False)
            # utils/eval_utils.get_accuracy
            correct, n = (ckpt["correct"], ckpt["n"]) if resuming else (0.0, 0)
            with torch.no_grad():
                for b, (imgs, y, _) in enumerate(loader):
                    if resuming and b < ckpt["batch"]:
                        continue   # done before the checkpoint
                    if resuming and b == ckpt["batch"] > 0:
                        restore_rng(ckpt["rng"])   # mid-domain: after the loader drew its base seed, as then
                    output = model(imgs)
                    correct += (output.argmax(1) == y).float().sum().item()
                    n += imgs.shape[0]
                    batches_done += 1
                    if args.checkpoint and batches_done % args.checkpoint_every == 0 and b + 1 < len(loader):
                        save_checkpoint(i_dom, b + 1, correct, n)
            err = 1.0 - correct / n  # get_accuracy / test_time.py: err = 1. - acc
            # SwiftTTA's results file: error in percent, with samples and correct
            domains.append({"name": corruption, "severity": severity, "samples": n, "correct": int(correct),
                            "error": 100.0 * err})
            log(f"  {corruption}{severity}: {100 * err:6.2f}%  [{n} images, {clock():.1f}s]")
        if args.checkpoint and i_dom + 1 < len(cfg.CORRUPTION.TYPE):
            save_checkpoint(i_dom + 1, 0, 0.0, 0)   # every domain boundary
    mean = float(np.mean([d["error"] for d in domains]))  # plain mean over domains, in percent
    return {"method": method, "setting": cfg.SETTING, "meanError": mean, "domains": domains,
            "seconds": round(clock(), 2), "referenceClass": type(model).__name__, "finalState": state_digest(model)}


def tensor_bytes(t):
    return t.detach().contiguous().cpu().numpy().tobytes()


def tensor_digest(t):
    """A digest of a tensor's dtype, shape and bytes: equal exactly when the bits are (torch.equal takes -0.0
    for 0.0; a resumed run must not)."""
    import hashlib
    h = hashlib.blake2b(f"{t.dtype} {tuple(t.shape)}".encode(), digest_size=16)
    h.update(tensor_bytes(t))
    return h.digest()


def state_digest(module):
    """SHA-256 over the module's state dict (names and float32 bytes in order): whether two runs, one of
    them interrupted and resumed, ended in the same state."""
    import hashlib
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode()); h.update(tensor_bytes(t))
    return h.hexdigest()


def run_identity(args):
    """What must match to resume a checkpoint: the stream, the data and the weights (paths may differ). The
    setting is named only when it is not continual, so that checkpoints written before --setting existed resume."""
    identity = {"weights": sha256(args.weights), "labels": sha256(os.path.join(args.data_dir, "labels.npy")),
                "corruptions": args.corruptions, "severity": args.severity, "batch_size": args.batch_size,
                "order": args.order, "seed": args.seed, "method_seed": args.method_seed,
                "augmentations": args.augmentations}
    if args.setting != "continual":
        identity.update(setting=args.setting, dirichlet=args.dirichlet)
    return identity


def check_augmentations():
    """P4 check: CoTTA's reference pipeline on a 1-channel batch."""
    import torchvision.transforms.functional as F
    from augmentations.transforms_cotta import get_tta_transforms
    x = torch.rand(4, 1, 32, 32)
    t = get_tta_transforms((32, 32))
    y = t(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(F.adjust_saturation(x, 1.3), x) and torch.equal(F.adjust_hue(x, 0.05), x)
    return "CoTTA augmentations run on 1-channel input; saturation and hue are the identity on 1 channel"


def sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-dir", default="/work/refs/test-time-adaptation",
                   help="checkout of mariodoebler/test-time-adaptation")
    p.add_argument("--data-dir", default=os.path.join(REPO, "data", "fashion-mnist-c", "FMNIST-C"))
    p.add_argument("--weights", default=os.path.join(REPO, "data", "models", "fmnist-wrn-10-2.safetensors"))
    p.add_argument("--methods", default=",".join(METHOD_YAML))
    p.add_argument("--corruptions", default=",".join(STANDARD_CORRUPTIONS))
    p.add_argument("--severity", type=int, default=CLI_DEFAULTS["severity"])
    p.add_argument("--batch-size", type=int, default=CLI_DEFAULTS["batch_size"])
    p.add_argument("--order", choices=["shuffled", "file"], default=CLI_DEFAULTS["order"])
    p.add_argument("--seed", type=int, default=CLI_DEFAULTS["seed"])
    p.add_argument("--setting", choices=["continual", "correlated"], default=CLI_DEFAULTS["setting"],
                   help="correlated: each domain ordered by label, or by --dirichlet (SETTING, TEST.DELTA_DIRICHLET)")
    p.add_argument("--dirichlet", type=float, default=0.0, help="Dirichlet δ of the correlated order (0: sorted by label)")
    p.add_argument("--window-length", type=int, default=None,
                   help="TEST.WINDOW_LENGTH: the sliding window of single-sample adaptation (with --batch-size 1), as tta's --window-length")
    p.add_argument("--augmentations", type=int, default=None, help="CoTTA TEST.N_AUGMENTATIONS (default: cfg, 32)")
    p.add_argument("--method-seed", type=int, default=None,
                   help="seed torch with this instead of --seed (same stream, other CoTTA draws: its run-to-run spread)")
    p.add_argument("--source-data", default=os.path.join(REPO, "data", "fashion-mnist-source"),
                   help="labelled source images for eata and rmt (images.npy uint8 NHWC, labels.npy), as tta's --source-data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the results here ({\"runs\": [...]}, like SwiftTTA's results file: errors in percent)")
    p.add_argument("--checkpoint", help="write the run's state here every --checkpoint-every batches and at every domain "
                   "boundary (one method; source, norm_test, norm_alpha, tent or cotta)")
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--resume", help="continue the run from this checkpoint (and go on writing it, unless --checkpoint says where)")
    p.add_argument("--check-augmentations", action="store_true", help="only run the P4 check and exit")
    args = p.parse_args()
    args.corruptions = [c for c in args.corruptions.split(",") if c]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHOD_YAML:
            sys.exit(f"unknown method {m}; choose from {', '.join(METHOD_YAML)}")
    args.checkpoint = args.checkpoint or args.resume
    if args.checkpoint and (len(methods) != 1 or methods[0] not in CHECKPOINTABLE or args.window_length is not None):
        sys.exit(f"--checkpoint/--resume: one method of {', '.join(sorted(CHECKPOINTABLE))}, without --window-length "
                 f"(their whole state is modules and an optimizer); got --methods {','.join(methods)}")
    if args.checkpoint_every < 1:
        sys.exit(f"--checkpoint-every takes a positive number of batches, got {args.checkpoint_every}")
    if args.dirichlet < 0 or (args.dirichlet > 0 and args.setting != "correlated"):
        sys.exit(f"--dirichlet takes a δ ≥ 0 and applies to --setting correlated only; got {args.dirichlet} with --setting {args.setting}")
    if args.resume and not os.path.isfile(args.resume):
        sys.exit(f"--resume {args.resume}: no such file")
    torch.set_num_threads(args.threads)
    import tempfile
    args.ckpt_dir = tempfile.mkdtemp(prefix="reference_compare_ckpt_")
    if any(m in SOURCE_METHODS for m in methods):
        if not os.path.isfile(os.path.join(args.source_data, "images.npy")):
            sys.exit(f"--source-data {args.source_data}: no images.npy there (eata and rmt need source data)")
        SOURCE_DATA["dir"] = args.source_data

    cls_dir = install_patches(os.path.abspath(args.reference_dir))
    conf, registry = import_reference()
    if args.check_augmentations:
        print(check_augmentations())
        return

    def log(s):
        print(s, file=sys.stderr, flush=True)

    labels = np.load(os.path.join(args.data_dir, "labels.npy"))
    k = labels.shape[0] // 5
    if any((labels[i * k:(i + 1) * k] != labels[:k]).any() for i in range(5)):
        # RobustBench takes labels[:K] for every severity; SwiftTTA reads them row for row.
        log("warning: labels.npy differs across severity blocks; the reference uses labels[:K] for every severity")
    log(f"reference: {args.reference_dir}; data {args.data_dir}; weights {args.weights} (sha256 {sha256(args.weights)[:16]}); batch {args.batch_size}, "
        f"order {args.order}, seed {args.seed}, severity {args.severity}, {args.setting}"
        f"{f' (Dirichlet δ {args.dirichlet})' if args.dirichlet > 0 else ''}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads")
    runs = [run_method(m, args, conf, registry, cls_dir, labels, log) for m in methods]
    log(f"CUDA guard calls (P3): {CUDA_CALLS}")

    names = [c for c in args.corruptions]
    short = {"gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impul", "defocus_blur": "defoc",
             "glass_blur": "glass", "motion_blur": "motn", "zoom_blur": "zoom", "snow": "snow", "frost": "frost",
             "fog": "fog", "brightness": "brit", "contrast": "contr", "elastic_transform": "elast",
             "pixelate": "pixel", "jpeg_compression": "jpeg"}
    print("error % (reference)  " + " ".join(f"{short.get(n, n[:5]):>6}" for n in names) + "    mean")
    for r in runs:
        print(f"{r['method']:<20} " + " ".join(f"{d['error']:6.1f}" for d in r["domains"])
              + f"  {r['meanError']:6.2f}")

    if args.json:
        out = {"runs": runs,
               "config": {"implementation": "mariodoebler/test-time-adaptation (PyTorch reference)",
                          "referenceDir": os.path.abspath(args.reference_dir),
                          "dataDirectory": os.path.abspath(args.data_dir), "weights": os.path.abspath(args.weights),
                          "weightsSha256": sha256(args.weights),
                          "batchSize": args.batch_size, "windowLength": args.window_length, "order": args.order, "seed": args.seed,
                          "methodSeed": args.seed if args.method_seed is None else args.method_seed,
                          "severities": [args.severity], "setting": args.setting, "dirichletDelta": args.dirichlet,
                          "corruptions": args.corruptions,
                          "sourceData": SOURCE_DATA["dir"] and os.path.abspath(SOURCE_DATA["dir"]),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cudaGuardCalls": CUDA_CALLS}}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.json)
        log(f"written {args.json}")


if __name__ == "__main__":
    main()
