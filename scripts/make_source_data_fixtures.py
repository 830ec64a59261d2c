#!/usr/bin/env python3
"""Tiny source-data files in every accepted layout, for the Swift SourceDataset tests
(Tests/Fixtures/sourcedata/), and the images and labels each must decode to (expected.safetensors:
float32 NCHW in [0, 1] and labels as float32).

- npy_uint8/: images.npy uint8 (N, H, W, C), labels.npy int64;  npy_float/: images.npy float32 NCHW, labels.npy int32
- cifar-10-batches-bin/: data_batch_1.bin, data_batch_2.bin (1 label byte + 3072 bytes per record)
- cifar-100-binary/train.bin (2 label bytes: coarse, fine)
- cifar-10-batches-py/: data_batch_1 written byte for byte as Python 2 cPickle wrote the official files
  (protocol 2, str keys and array data as SHORT_BINSTRING/BINSTRING, numpy.core.multiarray._reconstruct),
  data_batch_2 by Python 3 pickle.dump protocol 2 (bytes spelled _codecs.encode(..., 'latin1'))
- cifar-100-python/train: pickle.dump protocol 4 of the CIFAR-100 structure (fine_labels, coarse_labels)
- cifar10_raw_bytes_p4: a CIFAR-10 batch whose data is plain bytes (protocol 4)
- bad/: a pickle that would call os.system (written here as bytes, never loaded), a truncated batch,
  a binary file of the wrong size, a float image outside [0, 1], labels of the wrong count

Run from the repository root: python3 scripts/make_source_data_fixtures.py
"""
import os
import pickle
import struct

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "sourcedata")


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def py2_string(b):
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def py2_int(i):
    return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)


def python2_cifar_pickle(data, labels):
    """The byte layout of the official CIFAR-10 python batches (Python 2 cPickle, protocol 2)."""
    memo = [0]

    def put():
        memo[0] += 1
        return b"q" + bytes([memo[0]])

    n = data.shape[0]
    out = b"\x80\x02}" + put() + b"("
    out += py2_string(b"batch_label") + put() + py2_string(b"training batch 1 of 5") + put()
    out += py2_string(b"data") + put()
    out += b"cnumpy.core.multiarray\n_reconstruct\n" + put() + b"cnumpy\nndarray\n" + put()
    out += b"K\x00\x85" + put() + py2_string(b"b") + b"\x87R" + put()
    out += b"(K\x01" + py2_int(n) + py2_int(3072) + b"\x86" + put()
    out += b"cnumpy\ndtype\n" + put() + py2_string(b"u1") + b"K\x00K\x01\x87R" + put()
    out += b"(K\x03" + py2_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + py2_string(data.tobytes()) + b"tb"
    out += py2_string(b"labels") + put() + b"]" + put() + b"(" + b"".join(py2_int(int(y)) for y in labels) + b"e"
    out += py2_string(b"filenames") + put() + b"]" + put() + b"(" + b"".join(py2_string(f"img_{i}.png".encode()) for i in range(n)) + b"e"
    return out + b"u."


def chw_floats(data):
    return torch.from_numpy(data.astype(np.float32) / 255).view(-1, 3, 32, 32)


def write(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(payload)


def main():
    expected = {}
    # npy, uint8 NHWC (2×3 images, 3 channels) and float32 NCHW (1 channel)
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, size=(4, 2, 3, 3), dtype=np.uint8)
    os.makedirs(os.path.join(OUT, "npy_uint8"), exist_ok=True)
    np.save(os.path.join(OUT, "npy_uint8", "images.npy"), u8)
    np.save(os.path.join(OUT, "npy_uint8", "labels.npy"), np.array([3, 0, 2, 1], dtype=np.int64))
    expected["npy_uint8.x"] = torch.from_numpy(u8.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    expected["npy_uint8.y"] = torch.tensor([3.0, 0, 2, 1])
    f32 = rng.random((3, 1, 2, 2), dtype=np.float32)
    os.makedirs(os.path.join(OUT, "npy_float"), exist_ok=True)
    np.save(os.path.join(OUT, "npy_float", "images.npy"), f32)
    np.save(os.path.join(OUT, "npy_float", "labels.npy"), np.array([1, 1, 0], dtype=np.int32))
    expected["npy_float.x"] = torch.from_numpy(f32)
    expected["npy_float.y"] = torch.tensor([1.0, 1, 0])

    # CIFAR-10 binary: two batch files of 2 and 1 records
    d1, d2 = images(2, 2), images(1, 3)
    y1, y2 = [7, 2], [9]
    for name, d, y in [("data_batch_1.bin", d1, y1), ("data_batch_2.bin", d2, y2)]:
        write(os.path.join(OUT, "cifar-10-batches-bin", name), b"".join(bytes([l]) + r.tobytes() for l, r in zip(y, d)))
    expected["cifar10_bin.x"] = chw_floats(np.concatenate([d1, d2]))
    expected["cifar10_bin.y"] = torch.tensor([7.0, 2, 9])

    # CIFAR-100 binary: coarse, fine label bytes
    d = images(2, 4)
    write(os.path.join(OUT, "cifar-100-binary", "train.bin"), bytes([3]) + bytes([71]) + d[0].tobytes() + bytes([19]) + bytes([5]) + d[1].tobytes())
    expected["cifar100_bin.x"] = chw_floats(d)
    expected["cifar100_bin.y"] = torch.tensor([71.0, 5])

    # CIFAR-10 python: the Python 2 layout, then Python 3 protocol 2
    p1, p2 = images(3, 5), images(2, 6)
    l1, l2 = [0, 5, 9], [4, 4]
    write(os.path.join(OUT, "cifar-10-batches-py", "data_batch_1"), python2_cifar_pickle(p1, l1))
    write(os.path.join(OUT, "cifar-10-batches-py", "data_batch_2"),
          pickle.dumps({"batch_label": "training batch 2 of 5", "labels": l2, "data": p2,
                        "filenames": ["a.png", "b.png"]}, protocol=2))
    expected["cifar10_py.x"] = chw_floats(np.concatenate([p1, p2]))
    expected["cifar10_py.y"] = torch.tensor([float(v) for v in l1 + l2])

    # CIFAR-100 python, protocol 4
    p = images(3, 7)
    write(os.path.join(OUT, "cifar-100-python", "train"),
          pickle.dumps({"filenames": ["x"] * 3, "batch_label": "training batch 1 of 1", "fine_labels": [99, 0, 42],
                        "coarse_labels": [19, 4, 7], "data": p}, protocol=4))
    expected["cifar100_py.x"] = chw_floats(p)
    expected["cifar100_py.y"] = torch.tensor([99.0, 0, 42])

    # data as plain bytes, bytes keys (protocol 4)
    p = images(1, 8)
    write(os.path.join(OUT, "cifar10_raw_bytes_p4"), pickle.dumps({b"data": p.tobytes(), b"labels": [6]}, protocol=4))
    expected["raw_bytes.x"] = chw_floats(p)
    expected["raw_bytes.y"] = torch.tensor([6.0])

    # Refused inputs
    write(os.path.join(OUT, "bad", "os_system_pickle"), b"\x80\x02cposix\nsystem\nq\x00X\x08\x00\x00\x00echo pwnq\x01\x85q\x02Rq\x03.")
    good = python2_cifar_pickle(images(1, 9), [1])
    write(os.path.join(OUT, "bad", "truncated_batch"), good[: len(good) // 2])
    write(os.path.join(OUT, "bad", "wrong_size.bin"), bytes(3000))
    os.makedirs(os.path.join(OUT, "bad", "npy_out_of_range"), exist_ok=True)
    np.save(os.path.join(OUT, "bad", "npy_out_of_range", "images.npy"), np.full((1, 3, 2, 2), 1.5, dtype=np.float32))
    np.save(os.path.join(OUT, "bad", "npy_out_of_range", "labels.npy"), np.array([0], dtype=np.int64))
    os.makedirs(os.path.join(OUT, "bad", "npy_label_count"), exist_ok=True)
    np.save(os.path.join(OUT, "bad", "npy_label_count", "images.npy"), u8)
    np.save(os.path.join(OUT, "bad", "npy_label_count", "labels.npy"), np.array([1, 2], dtype=np.int64))
    write(os.path.join(OUT, "bad", "float_dtype_pickle"), pickle.dumps({"data": np.zeros((1, 3072), dtype=np.float32), "labels": [0]}, protocol=4))

    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"))


if __name__ == "__main__":
    main()
