#!/usr/bin/env python3
"""Writes Tests/Fixtures/stream/python_random.json: reference outputs of Python's `random`
module (and one numpy conversion) that Tests/TTADataTests/BenchmarkStreamTests.swift compares
exactly against `PythonRandom` and `BenchmarkStream`.

Run from anywhere:  python3 scripts/make_stream_fixtures.py
Needs Python 3 and numpy (no torch). The output is deterministic for a given Python `random`
implementation (MT19937 seeded with init_by_array; shuffle/sample/_randbelow as in CPython
3.2 and later, unchanged through 3.12, the version mariodoebler/test-time-adaptation pins).

Every top-level key of the JSON is the name of the function below that produced it, and each
entry repeats that name in "function", so a failing test can be traced to its generator.
Long permutations are not stored in full: each case keeps the first 50 values ("head"),
"sum_iv" = sum(i * v) and "poly" = a polynomial hash (see `digest`), which the Swift tests
recompute over their full output.
"""
import json
import math
import os
import random
import sys

import numpy as np

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "Tests", "Fixtures", "stream", "python_random.json"))

SEEDS = [0, 1, 2, 3, 42, 2**32 + 5, 2**64 - 1]
HEAD = 50


def digest(values):
    """Full-list check values: sum(i * v) and h = (h * 1000003 + v + 1) mod (2**31 - 1) from h = 0."""
    h = 0
    for v in values:
        h = (h * 1000003 + v + 1) % 2147483647
    return {"count": len(values), "head": list(values[:HEAD]),
            "sum_iv": sum(i * v for i, v in enumerate(values)), "poly": h,
            "full": list(values) if len(values) <= HEAD else None}


def sample_method(n, k):
    """Which branch random.sample takes (mirrors CPython's condition), for documentation."""
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return "pool" if n <= setsize else "set"


def shuffle_cases():
    """random.seed(s); x = list(range(n)); random.shuffle(x)."""
    cases = []
    for s in SEEDS:
        for n in [7, 50, 10000]:
            random.seed(s)
            x = list(range(n))
            random.shuffle(x)
            cases.append({"seed": str(s), "n": n, **digest(x)})
    for s in [1, 2]:  # a mixed_domains-sized list (15 x 10000)
        random.seed(s)
        x = list(range(150000))
        random.shuffle(x)
        cases.append({"seed": str(s), "n": 150000, **digest(x)})
    return cases


def sample_cases():
    """random.seed(s); random.sample(range(n), k), covering both of sample's branches."""
    cases = []
    for s, n, k in [(1, 7, 3), (2, 7, 7), (1, 50, 10), (2, 50, 50), (1, 21, 5), (1, 22, 5),
                    (1, 10000, 1000), (2, 10000, 5000), (1, 10000, 5), (3, 10000, 10000),
                    (1, 150000, 1500), (42, 150000, 30000)]:
        random.seed(s)
        x = random.sample(range(n), k)
        cases.append({"seed": str(s), "n": n, "k": k, "method": sample_method(n, k), **digest(x)})
    return cases


def doebler_domain_order():
    """The order mariodoebler's get_test_loader gives one CIFAR-C domain block of n rows:
    random.seed(s); random.shuffle(samples); then, when CORRUPTION.NUM_EX != -1,
    samples = random.sample(samples, k=min(NUM_EX, n)). Values are row indices in the block."""
    cases = []
    for s, n, k in [(1, 10000, None), (2, 10000, None), (1, 10000, 1000), (2, 10000, 10000),
                    (1, 40, None), (1, 40, 25), (5, 40, 40), (3, 7, 5)]:
        random.seed(s)
        x = list(range(n))
        random.shuffle(x)
        if k is not None:
            x = random.sample(x, k=min(k, n))
        cases.append({"seed": str(s), "n": n, "k": k, **digest(x)})
    return cases


def doebler_mixed_order():
    """mixed_domains: the d domains' blocks of n rows are concatenated in corruption order
    (sample id = domain * n + row), then random.seed(s); random.shuffle(all); and with
    NUM_EX = k_per_domain * d, random.sample(all, k=NUM_EX)."""
    cases = []
    for s, d, n, k in [(1, 15, 10000, None), (2, 3, 40, None), (1, 3, 40, 10), (1, 15, 10000, 100)]:
        x = [dom * n + r for dom in range(d) for r in range(n)]
        random.seed(s)
        random.shuffle(x)
        if k is not None:
            x = random.sample(x, k=k * d)
        cases.append({"seed": str(s), "domains": d, "n": n, "k_per_domain": k, **digest(x)})
    return cases


def getrandbits_cases():
    """random.seed(s); then getrandbits(k) for each k in `bits`, in order (values as decimal strings)."""
    bits = [1, 2, 5, 8, 16, 31, 32, 33, 48, 53, 63, 64, 0, 7]
    cases = []
    for s in SEEDS:
        random.seed(s)
        cases.append({"seed": str(s), "bits": bits, "values": [str(random.getrandbits(k)) for k in bits]})
    return cases


def randbelow_cases():
    """random.seed(s); then random._inst._randbelow(n) (the module instance) for each n in `bounds`, in order."""
    bounds = [1, 2, 3, 10, 1000, 2**31 + 1, 2**32, 2**40 + 7, 2**62 + 3]
    cases = []
    for s in [1, 2, 42]:
        random.seed(s)
        cases.append({"seed": str(s), "bounds": [str(b) for b in bounds],
                      "values": [str(random._inst._randbelow(b)) for b in bounds]})
    return cases


def random_cases():
    """random.seed(s); ten random() floats, stored as repr and as the exact integer x * 2**53."""
    cases = []
    for s in SEEDS:
        random.seed(s)
        xs = [random.random() for _ in range(10)]
        cases.append({"seed": str(s), "repr": [repr(x) for x in xs], "scaled": [str(int(x * 2**53)) for x in xs]})
    return cases


def nchw_reference():
    """numpy's CIFAR-C conversion (RobustBench): x uint8 (N, H, W, C) ->
    np.transpose(x, (0, 3, 1, 2)).astype(np.float32) / 255, stored as float32 bit patterns.
    x = ((np.arange(N*H*W*C) * 37 + 11) % 256).astype(np.uint8).reshape(N, H, W, C)."""
    out = []
    for shape in [(2, 3, 4, 3), (3, 2, 5, 1)]:
        x = ((np.arange(int(np.prod(shape))) * 37 + 11) % 256).astype(np.uint8).reshape(shape)
        y = np.transpose(x, (0, 3, 1, 2)).astype(np.float32) / 255
        assert y.dtype == np.float32
        out.append({"shape_nhwc": list(shape), "f32_bits": [int(b) for b in y.reshape(-1).view(np.uint32)]})
    return out


def main():
    data = {"generator": "scripts/make_stream_fixtures.py",
            "python": sys.version.split()[0], "numpy": np.__version__}
    write_fixture(OUT, data, [(fn, fn) for fn in [shuffle_cases, sample_cases, doebler_domain_order, doebler_mixed_order,
                                                  getrandbits_cases, randbelow_cases, random_cases, nchw_reference]])


def write_fixture(path, data, sections):
    """Writes `data` plus one section per (function, call) pair: the function's name and docstring and the cases
    call() returns (scripts/make_dirichlet_fixtures.py writes its file through this too)."""
    for fn, call in sections:
        data[fn.__name__] = {"function": fn.__name__, "doc": " ".join(fn.__doc__.split()), "cases": call()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
