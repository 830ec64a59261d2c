#!/usr/bin/env python3
"""Writes the small .npy and .safetensors fixtures used by Tests/TTADataTests.

Run from anywhere:  python3 scripts/make_format_fixtures.py
Needs numpy and safetensors; torch is used for BF16 (and the torch writer) when importable.
Outputs go to Tests/Fixtures/formats/ (each file is at most a few KB), together with
expected.json, which records for every fixture its dtype, shape and expected values:
  - "f32_bits": the float32 bit patterns of np.asarray(values, dtype=float32) (exact, NaN/inf safe),
  - "ints": the integer values, for integer dtypes,
  - "error": a substring the Swift reader's error must contain, for the hostile files.
Every file name starts with the name of the function below that wrote it (minus "make_").
The output is deterministic: re-running rewrites identical bytes (given the same numpy/safetensors).
"""
import json
import os
import struct
import warnings

import numpy as np

warnings.simplefilter("ignore")  # float32 overflow of 1e300 and numpy's Python-2 header warning are expected

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "formats")
OUT = os.path.normpath(OUT)
EXPECTED = {}


def record(fname, arr=None, **extra):
    entry = dict(extra)
    if arr is not None:
        a = np.asarray(arr)
        entry["shape"] = list(a.shape)
        entry["dtype"] = str(a.dtype)
        entry["f32_bits"] = [int(x) for x in np.asarray(a, dtype=np.float32).reshape(-1).view(np.uint32)]
        if a.dtype.kind in "iub":
            entry["ints"] = [int(x) for x in a.reshape(-1)]
    EXPECTED[fname] = entry


def path(fname):
    return os.path.join(OUT, fname)


# ---------------------------------------------------------------- .npy written by numpy

def make_npy_dtypes():
    """np.save (version 1.0) of each supported dtype."""
    arrays = {
        "npy_dtypes_f4.npy": (np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0),
        "npy_dtypes_f8.npy": np.array([[0.1, -2.5], [1e300, 3.0]], dtype=np.float64),
        "npy_dtypes_i4.npy": np.array([-7, 0, 9, 2147483647], dtype=np.int32),
        "npy_dtypes_i8.npy": np.array([3, 1, 4, 1, 5, -9, 2, 6, 5, 3], dtype=np.int64),
        # CIFAR-C layout (N, H, W, C), uint8.
        "npy_dtypes_u1.npy": (np.arange(4 * 2 * 3 * 3, dtype=np.int64) * 7 % 256).astype(np.uint8).reshape(4, 2, 3, 3),
    }
    for fname, a in arrays.items():
        np.save(path(fname), a)
        record(fname, a, version=1)


def make_npy_shapes():
    """np.save of a 0-d array, an empty array and a 1-d array (header shapes (), (0, 3), (5,))."""
    cases = {
        "npy_shapes_scalar.npy": np.array(2.5, dtype=np.float32),
        "npy_shapes_empty.npy": np.zeros((0, 3), dtype=np.float32),
        "npy_shapes_1d.npy": np.array([1, -2, 3.25, 0, 8], dtype=np.float32),
    }
    for fname, a in cases.items():
        np.save(path(fname), a)
        record(fname, a, version=1)


def make_npy_versions():
    """np.lib.format.write_array with explicit versions 2.0 and 3.0."""
    a2 = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5)
    with open(path("npy_versions_v2_f4.npy"), "wb") as f:
        np.lib.format.write_array(f, a2, version=(2, 0))
    record("npy_versions_v2_f4.npy", a2, version=2)
    a3 = np.array([[10, 20], [30, 40], [50, 60]], dtype=np.int64)
    with open(path("npy_versions_v3_i8.npy"), "wb") as f:
        np.lib.format.write_array(f, a3, version=(3, 0))
    record("npy_versions_v3_i8.npy", a3, version=3)


def make_npy_hostile():
    """Files numpy writes (or that are cut short) that the Swift reader must refuse."""
    np.save(path("npy_hostile_fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    record("npy_hostile_fortran.npy", error="fortran_order", field="fortran_order")

    np.save(path("npy_hostile_object.npy"), np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    record("npy_hostile_object.npy", error="pickle", field="descr")

    np.save(path("npy_hostile_bigendian.npy"), np.arange(4, dtype=">f4"))
    record("npy_hostile_bigendian.npy", error="big-endian dtype '>f4'", field="descr")

    np.save(path("npy_hostile_f2.npy"), np.arange(4, dtype=np.float16))
    record("npy_hostile_f2.npy", error="unsupported dtype '<f2'", field="descr")

    np.save(path("npy_hostile_structured.npy"), np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]))
    record("npy_hostile_structured.npy", error="structured dtypes", field="descr")

    full = path("npy_hostile_truncated.npy")
    np.save(full, np.arange(10, dtype=np.float32))
    with open(full, "rb") as f:
        data = f.read()
    with open(full, "wb") as f:
        f.write(data[:-6])  # 40 data bytes -> 34
    record("npy_hostile_truncated.npy", error="needs 40 bytes", field="shape")


def make_npy_handcrafted():
    """Headers numpy accepts but no longer writes: Python 2 'L' suffixes, 16-byte alignment,
    keys out of order without a trailing comma."""
    def write(fname, header, payload):
        header = header.encode("latin1")
        total = 10 + len(header) + 1
        pad = (16 - total % 16) % 16
        header = header + b" " * pad + b"\n"
        with open(path(fname), "wb") as f:
            f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload)
        # Check numpy itself reads it back.
        return np.load(path(fname))

    a = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.25
    back = write("npy_handcrafted_py2long.npy",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", a.tobytes())
    assert np.array_equal(back, a)
    record("npy_handcrafted_py2long.npy", a, version=1)

    b = np.array([5, 6, 7], dtype=np.uint8)
    back = write("npy_handcrafted_unordered.npy",
                 "{'shape': (3,), \"fortran_order\": False, 'descr': '<u1'}", b.tobytes())
    assert np.array_equal(back, b)
    record("npy_handcrafted_unordered.npy", b, version=1)


# ---------------------------------------------------------------- .safetensors

def make_st_numpy():
    """safetensors.numpy.save_file: a tiny F32 linear layer (+ F16 when asked)."""
    from safetensors.numpy import save_file
    tensors = {
        "fc.weight": (np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5),
        "fc.bias": np.array([0.5, -1.0], dtype=np.float32),
    }
    save_file(tensors, path("st_numpy_f32.safetensors"), metadata={"format": "pt"})
    record("st_numpy_f32.safetensors", tensors=tensor_records(tensors), metadata={"format": "pt"})

    half = {"h": np.array([1.0, -0.0, 65504.0, 2.0 ** -24, np.inf, -2.5], dtype=np.float16)}
    save_file(half, path("st_numpy_f16.safetensors"))
    record("st_numpy_f16.safetensors", tensors=tensor_records(half), metadata={})


def make_st_torch():
    """safetensors.torch.save_file with every dtype the Swift reader converts (BF16 needs torch)."""
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError:
        print("torch not importable: skipping st_torch_*.safetensors (keeping existing files)")
        return
    t = {
        "f32": torch.tensor([[1.5, -2.0], [0.0, 3.25]], dtype=torch.float32),
        "f16": torch.tensor([0.5, -0.0, 65504.0, 2.0 ** -24, float("inf"), float("nan")], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.25, 3.0e38, float("-inf"), 1.0e-30], dtype=torch.bfloat16),
        "f64": torch.tensor([0.1, -1e300, 2.0], dtype=torch.float64),
        "i64": torch.tensor([[-3, 0], [7, 9007199254740993]], dtype=torch.int64),
        "bn.num_batches_tracked": torch.tensor(12345, dtype=torch.int64),
        "i32": torch.tensor([-2147483648, 5], dtype=torch.int32),
        "i16": torch.tensor([-300, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127, 0], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(4.0),
        "empty": torch.zeros(0, 3),
    }
    save_file(t, path("st_torch_dtypes.safetensors"), metadata={"format": "pt"})
    as_np = {k: (v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()) for k, v in t.items()}
    recs = tensor_records(as_np)
    recs["bf16"]["dtype"] = "bfloat16"
    record("st_torch_dtypes.safetensors", tensors=recs, metadata={"format": "pt"})

    # A DataParallel-style state dict of conv + batchnorm ("module." prefix on every key).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
    sd = {"module." + k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, path("st_torch_module_prefix.safetensors"), metadata={"format": "pt"})
    record("st_torch_module_prefix.safetensors",
           tensors=tensor_records({k: v.numpy() for k, v in sd.items()}), metadata={"format": "pt"})


def tensor_records(tensors):
    out = {}
    for k, a in tensors.items():
        a = np.asarray(a)
        rec = {"shape": list(a.shape), "dtype": str(a.dtype),
               "f32_bits": [int(x) for x in np.asarray(a, dtype=np.float32).reshape(-1).view(np.uint32)]}
        if a.dtype.kind in "iub":
            rec["ints"] = [int(x) for x in a.reshape(-1)]
        out[k] = rec
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    # Keep entries of files this run may skip (st_torch_* without torch).
    if os.path.exists(path("expected.json")):
        with open(path("expected.json")) as f:
            EXPECTED.update(json.load(f))
    make_npy_dtypes()
    make_npy_shapes()
    make_npy_versions()
    make_npy_hostile()
    make_npy_handcrafted()
    make_st_numpy()
    make_st_torch()
    with open(path("expected.json"), "w") as f:
        # One fixture per line: compact but diffable.
        lines = [json.dumps(k) + ": " + json.dumps(EXPECTED[k], sort_keys=True) for k in sorted(EXPECTED)]
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    sizes = {n: os.path.getsize(path(n)) for n in sorted(os.listdir(OUT))}
    for n, s in sizes.items():
        print(f"{s:6d}  {n}")
    assert max(sizes.values()) < 16384, "fixtures must stay tiny"


if __name__ == "__main__":
    main()
