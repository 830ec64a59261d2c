#!/usr/bin/env python3
"""Build SwiftTTA's embedded default benchmark: FMNIST-C, a small Fashion-MNIST
benchmark in the CIFAR-10-C on-disk layout.

Output (default `data/fashion-mnist-c/FMNIST-C/`):
  <corruption>.npy  uint8 (5*K, 32, 32, 1) NHWC, rows [(s-1)*K, s*K) = severity s
  labels.npy        uint8 (5*K,), the K labels repeated 5 times

for the 15 standard corruptions (gaussian_noise ... jpeg_compression).

Pipeline per image:
  Fashion-MNIST 28x28 grey  -> zero-pad 2 px per side -> 32x32
  -> replicate grey into 3 channels (32x32x3 uint8 RGB)
  -> imagecorruptions.corrupt(img, severity, corruption_name)   (reference ImageNet-C code)
  -> channel mean, round, clip to uint8 -> 32x32x1

Five corruptions are applied at 224x224 instead of 32x32, because their parameters
are absolute pixel sizes tuned for 224x224 ImageNet images (see UPSCALED below):
the 32x32 image is upscaled 7x with nearest neighbour, corrupted, and box-averaged
(7x7 mean) back to 32x32.  For any pixel-wise operation this round trip is exactly
the identity, so only the spatial scale of the corruption changes.

Compatibility shims (none changes the maths):
  * `pkg_resources` (gone from setuptools >= 81) is provided as a tiny stand-in
    whose `resource_filename` resolves files next to the imagecorruptions module
    (only used to locate the bundled frost images);
  * `np.float_` (removed in NumPy 2) is aliased to `np.float64` (used by `fog`);
  * `skimage.filters.gaussian(multichannel=True)` (removed in scikit-image 0.19)
    is mapped to `channel_axis=-1` (used by `glass_blur`);
  * `skimage.util.random_noise` (used by `impulse_noise`) gets an explicit
    `rng = np.random.default_rng(np.random.randint(2**31 - 1))`, drawn from NumPy's
    legacy global RNG; without it scikit-image >= 0.19 uses an unseeded generator
    and the output would not be reproducible.

Reproducibility: the image selection uses numpy.random.default_rng(--seed); each
(corruption, severity) block re-seeds NumPy's legacy global RNG (which
imagecorruptions uses) and Python's `random` with
    seed + 1000 * (corruption index + 1) + severity
so every block is independent of the others and of the number of worker processes.

Usage:  python3 scripts/make_embedded_benchmark.py [--out DIR] [--jobs 2]
"""

import argparse
import gzip
import os
import random
import sys
import time
import types

import numpy as np

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"

CORRUPTIONS = [
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
]

# Corruptions whose parameters are absolute pixel sizes tuned for 224x224 images.
# At 32x32 the blurs (disk radius 3..10 px, motion radius 10..20 px, glass-blur
# swaps of up to +-4 px, elastic displacement of several px with a 0.3 px
# smoothing sigma) wipe out the image; the frost texture is cropped at its native
# resolution, so a 32x32 crop shows only a tiny patch of it (CIFAR-10-C itself
# shrinks the frost images 5x before cropping).  These are applied at 224x224.
UPSCALED = {"defocus_blur", "glass_blur", "motion_blur", "elastic_transform", "frost"}
UPSCALE = 7  # 32 * 7 = 224

K_PER_CLASS = 20
NUM_CLASSES = 10


# --------------------------------------------------------------------------- shims

def install_shims():
    """Make imagecorruptions 1.1.2 importable/runnable with current NumPy,
    scikit-image and setuptools.  None of the shims changes any computation."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package, resource):
            mod = sys.modules[package]
            return os.path.join(os.path.dirname(os.path.abspath(mod.__file__)), resource)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim

    if not hasattr(np, "float_"):
        np.float_ = np.float64

    import warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    import imagecorruptions.corruptions as icc
    from skimage.filters import gaussian as sk_gaussian

    def gaussian_compat(image, *args, multichannel=None, **kwargs):
        if multichannel is not None and "channel_axis" not in kwargs:
            kwargs["channel_axis"] = -1 if multichannel else None
        return sk_gaussian(image, *args, **kwargs)

    icc.gaussian = gaussian_compat

    # impulse_noise calls skimage.util.random_noise, which (since scikit-image
    # 0.19) draws from a fresh, unseeded np.random.default_rng() unless given
    # `rng`; older scikit-image used NumPy's global RNG.  Derive its generator
    # from NumPy's legacy global RNG so the output follows np.random.seed.
    import skimage.util
    if not getattr(skimage.util.random_noise, "_fmnistc_seeded", False):
        sk_random_noise = skimage.util.random_noise

        def random_noise_seeded(image, *args, rng=None, **kwargs):
            if rng is None and "seed" not in kwargs:
                rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            return sk_random_noise(image, *args, rng=rng, **kwargs)

        random_noise_seeded._fmnistc_seeded = True
        skimage.util.random_noise = random_noise_seeded

    import imagecorruptions
    return imagecorruptions


# --------------------------------------------------------------------------- data

def read_idx(path):
    """Parse a gzip'ed IDX file (magic: 0x00 0x00 dtype ndim, then ndim big-endian
    uint32 sizes, then the data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
             0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: size mismatch")
    return data.reshape(shape)


def load_fmnist(split):
    """split: 'train' or 't10k'.  Returns (images uint8 (N,28,28), labels uint8 (N,))."""
    x = read_idx(os.path.join(FMNIST_DIR, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(FMNIST_DIR, f"{split}-labels-idx1-ubyte.gz"))
    return x.astype(np.uint8), y.astype(np.uint8)


def pad32(x):
    """(N,28,28) -> (N,32,32), 2 zero pixels per side."""
    return np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="constant", constant_values=0)


def select_test_subset(labels, seed, per_class=K_PER_CLASS):
    """Class-balanced (`per_class` per class) seeded selection, in seeded shuffled order."""
    rng = np.random.default_rng(seed)
    idx = []
    for c in range(NUM_CLASSES):
        pool = np.flatnonzero(labels == c)
        idx.append(np.sort(rng.choice(pool, size=per_class, replace=False)))
    idx = np.concatenate(idx)
    return idx[rng.permutation(len(idx))]


# --------------------------------------------------------------------------- corruption

def glass_blur_fast(x, severity=1):
    """Same computation as imagecorruptions.corruptions.glass_blur (1.1.2), with the
    per-pixel Python loop of NumPy calls replaced by one vectorised random draw and
    a loop over plain Python lists.  Consumes NumPy's legacy global RNG in exactly
    the same order (one randint pair per visited pixel, [dx, dy]); the output is
    bit-identical to the reference (checked by --verify-glass).

    Note the reference's "swap" `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on an
    HxWx3 array acts on NumPy views: it copies pixel (h', w') into (h, w) and the
    second assignment is a no-op.  That behaviour is reproduced here (for 2-D
    input it is a real swap, also reproduced)."""
    import imagecorruptions.corruptions as icc
    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(icc.gaussian(np.array(x) / 255., sigma=c[0], multichannel=True) * 255)
    H, W = x.shape[:2]
    d = c[1]
    hs = np.arange(H - d, d, -1)
    ws = np.arange(W - d, d, -1)
    if len(hs) and len(ws):
        hh, ww = np.meshgrid(hs, ws, indexing="ij")
        dst = (hh * W + ww).ravel()
        pix = [tuple(p) for p in x.reshape(H * W, -1)] if x.ndim == 3 else x.ravel().tolist()
        for _ in range(c[2]):
            r = np.random.randint(-d, d, size=(dst.size, 2))  # rows = [dx, dy]
            src = ((hh.ravel() + r[:, 1]) * W + (ww.ravel() + r[:, 0]))
            if x.ndim == 3:
                for a, b in zip(dst.tolist(), src.tolist()):
                    pix[a] = pix[b]
            else:
                for a, b in zip(dst.tolist(), src.tolist()):
                    pix[a], pix[b] = pix[b], pix[a]
        x = np.array(pix, dtype=np.uint8).reshape(x.shape)
    return np.clip(icc.gaussian(x / 255., sigma=c[0], multichannel=True), 0, 1) * 255


def run_corruption(ic, img, name, severity, reference_glass=False):
    """img: HxWx3 uint8.  Calls the imagecorruptions public API (or the verified
    fast glass_blur) and returns HxWx3 uint8, like imagecorruptions.corrupt."""
    if name == "glass_blur" and not reference_glass:
        from PIL import Image
        return np.uint8(glass_blur_fast(Image.fromarray(img), severity))
    return ic.corrupt(img, severity=severity, corruption_name=name)


def corrupt_gray32(ic, img32, name, severity, reference_glass=False):
    """img32: (32,32) uint8 grey.  Returns (32,32) uint8 grey."""
    rgb = np.repeat(img32[:, :, None], 3, axis=2)
    if name in UPSCALED:
        big = rgb.repeat(UPSCALE, axis=0).repeat(UPSCALE, axis=1)
        out = run_corruption(ic, big, name, severity, reference_glass)
        h, w = img32.shape
        out = out.astype(np.float64).reshape(h, UPSCALE, w, UPSCALE, 3).mean(axis=(1, 3))
    else:
        out = run_corruption(ic, rgb, name, severity, reference_glass).astype(np.float64)
    if out.shape != (32, 32, 3):
        raise RuntimeError(f"{name}: unexpected output shape {out.shape}")
    return np.clip(np.rint(out.mean(axis=2)), 0, 255).astype(np.uint8)


def block_seed(base, ci, severity):
    return base + 1000 * (ci + 1) + severity


def make_block(args):
    """Corrupt all K images with one corruption at one severity.  Runs in a worker."""
    images, name, severity, seed, reference_glass = args
    ic = install_shims()
    np.random.seed(seed)
    random.seed(seed)
    t0 = time.time()
    out = np.stack([corrupt_gray32(ic, im, name, severity, reference_glass) for im in images])
    return name, severity, out, time.time() - t0


def verify_glass(ic, n, seed):
    """glass_blur_fast vs imagecorruptions' glass_blur on the 224x224 upscaled
    benchmark images: same seed in, identical output and RNG state out."""
    x_test, y_test = load_fmnist("t10k")
    images = pad32(x_test[select_test_subset(y_test, seed)[:n]])
    ok = True
    for s in range(1, 6):
        for i, im in enumerate(images):
            big = np.repeat(im[:, :, None], 3, axis=2).repeat(UPSCALE, 0).repeat(UPSCALE, 1)
            np.random.seed(block_seed(seed, 4, s) + i)
            ref = run_corruption(ic, big, "glass_blur", s, reference_glass=True)
            st_ref = np.random.get_state()
            np.random.seed(block_seed(seed, 4, s) + i)
            fast = run_corruption(ic, big, "glass_blur", s, reference_glass=False)
            st_fast = np.random.get_state()
            same = (np.array_equal(ref, fast) and np.array_equal(st_ref[1], st_fast[1])
                    and st_ref[2] == st_fast[2])
            ok &= same
            print(f"severity {s} image {i}: {'identical' if same else 'DIFFERENT'}", flush=True)
    print("glass_blur_fast verified bit-identical" if ok else "MISMATCH")
    if not ok:
        sys.exit(1)


def save_npy(path, arr):
    tmp = path + ".tmp.npy"
    np.save(tmp, np.ascontiguousarray(arr))
    os.replace(tmp, path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "fashion-mnist-c", "FMNIST-C"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--corruptions", nargs="*", default=CORRUPTIONS)
    ap.add_argument("--reference-glass", action="store_true",
                    help="use imagecorruptions' own (slow, ~3 s/image at 224x224) glass_blur")
    ap.add_argument("--verify-glass", type=int, default=0, metavar="N",
                    help="only check glass_blur_fast against the reference on N images x 5 severities, then exit")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ic = install_shims()  # fail early if imagecorruptions is missing

    if args.verify_glass:
        verify_glass(ic, args.verify_glass, args.seed)
        return

    x_test, y_test = load_fmnist("t10k")
    sel = select_test_subset(y_test, args.seed)
    images = pad32(x_test[sel])
    labels = y_test[sel]
    K = len(sel)
    print(f"selected {K} test images; class counts {np.bincount(labels, minlength=10).tolist()}")
    print("test-set indices:", sel.tolist())

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    save_npy(os.path.join(out_dir, "labels.npy"), np.tile(labels, 5).astype(np.uint8))

    tasks = []
    for name in args.corruptions:
        ci = CORRUPTIONS.index(name)
        for s in range(1, 6):
            tasks.append((images, name, s, block_seed(args.seed, ci, s), args.reference_glass))

    blocks = {}
    t0 = time.time()
    if args.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(args.jobs) as pool:
            # glass_blur blocks are slowest: start them first
            order = sorted(tasks, key=lambda t: t[1] != "glass_blur")
            for name, s, out, dt in pool.imap_unordered(make_block, order):
                blocks[(name, s)] = out
                print(f"  {name} s{s}: {dt:.1f}s", flush=True)
    else:
        for t in tasks:
            name, s, out, dt = make_block(t)
            blocks[(name, s)] = out
            print(f"  {name} s{s}: {dt:.1f}s", flush=True)

    for name in args.corruptions:
        arr = np.concatenate([blocks[(name, s)] for s in range(1, 6)])[..., None]
        assert arr.shape == (5 * K, 32, 32, 1) and arr.dtype == np.uint8
        save_npy(os.path.join(out_dir, f"{name}.npy"), arr)
        print(f"wrote {name}.npy {arr.shape}; mean pixel per severity "
              f"{[round(float(arr[i*K:(i+1)*K].mean()), 1) for i in range(5)]}")
    print(f"clean mean pixel {images.mean():.1f}; done in {time.time() - t0:.0f}s -> {out_dir}")


if __name__ == "__main__":
    main()
