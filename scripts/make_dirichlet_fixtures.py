#!/usr/bin/env python3
"""Writes Tests/Fixtures/stream/numpy_dirichlet.json: outputs of numpy's legacy `np.random` (RandomState) and of
mariodoebler/test-time-adaptation's own `sort_by_dirichlet`, which Tests/TTADataTests/NumpyRandomTests.swift compares
exactly against `NumpyRandomState`, `numpySum` and `BenchmarkStream.dirichletOrder`.

    python3 scripts/make_dirichlet_fixtures.py [--reference-dir /work/refs/test-time-adaptation]

Needs numpy and a checkout of the reference repo (not torch): `sort_by_dirichlet` is read out of its
classification/datasets/data_loading.py and run as it is, on lists of (index, label) pairs, after
`np.random.seed(seed)` as its `get_test_loader` does. Floats are stored as `float.hex` strings, so the comparison
is bit for bit. Every top-level key is the name of the function below that produced it; each entry repeats it in
"function", so a failing test can be traced to its generator. Long permutations keep a head, sum(i * v) and a
polynomial hash (as scripts/make_stream_fixtures.py).
"""
import argparse
import ast
import os
import random
import sys
import time

import numpy as np

from make_stream_fixtures import HEAD, digest, write_fixture  # the same digests and layout as python_random.json

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "Tests", "Fixtures", "stream", "numpy_dirichlet.json"))


def hexes(xs):
    return [float(x).hex() for x in xs]


def legacy_draw_cases():
    """np.random.seed(s) (RandomState's legacy seeding), then in order: random_sample(6), standard_normal(5) (the
    polar method, which caches its second value), standard_exponential(3), standard_gamma(shape, 4) for each shape in
    `shapes`, then shuffle(arange(n)) and shuffle(list(range(m))) (the two shuffle paths), then random_sample(2)."""
    shapes = [0.01, 0.1, 0.5, 1.0, 1.5, 10.0]
    cases = []
    for s in [0, 1, 2, 4, 2020, 2**32 - 1]:
        np.random.seed(s)
        c = {"seed": str(s), "shapes": shapes, "random_sample": hexes(np.random.random_sample(6)),
             "standard_normal": hexes(np.random.standard_normal(5)),
             "standard_exponential": hexes(np.random.standard_exponential(3)),
             "standard_gamma": [hexes(np.random.standard_gamma(a, 4)) for a in shapes]}
        x = np.arange(37)
        np.random.shuffle(x)
        y = list(range(11))
        np.random.shuffle(y)
        c.update({"shuffle_array": x.tolist(), "shuffle_list": y, "random_sample_after": hexes(np.random.random_sample(2))})
        cases.append(c)
    return cases


def dirichlet_cases():
    """np.random.seed(s); then np.random.dirichlet(np.repeat(delta, k)) three times (the draws continue)."""
    cases = []
    for s, delta, k in [(1, 0.1, 10), (2, 0.01, 10), (3, 1.0, 10), (4, 2.5, 5), (1, 0.01, 100), (2020, 0.1, 100),
                        (5, 0.5, 200), (6, 0.001, 3)]:
        np.random.seed(s)
        with np.errstate(all="ignore"):
            draws = [np.random.dirichlet(np.repeat(delta, k)) for _ in range(3)]
        cases.append({"seed": str(s), "delta": delta, "k": k, "draws": [hexes(d) for d in draws]})
    return cases


def pairwise_sum_cases():
    """a.sum() of float64 arrays whose magnitudes span 1e-30..1e30, so that the order of numpy's pairwise summation
    (8 accumulators up to 128 values, halves above) decides the result; a = 10.0 ** e * u with u, e from
    np.random.default_rng(n)."""
    cases = []
    for n in [1, 5, 7, 8, 9, 15, 16, 17, 100, 127, 128, 129, 200, 255, 256, 1000, 1001]:
        rng = np.random.default_rng(n)
        a = rng.random(n) * (10.0 ** rng.integers(-30, 30, n))
        cases.append({"n": n, "values": hexes(a), "sum": float(a.sum()).hex(),
                      "sequential": float(sum(a.tolist())).hex()})
    return cases


class CountingNumpy:
    """numpy as the reference function sees it, but counting its np.random.dirichlet calls (one per class per
    attempt), so that each case can record how many attempts the reference made."""

    class Random:
        def __init__(self):
            self.dirichlet_calls = 0

        def dirichlet(self, *args, **kwargs):
            self.dirichlet_calls += 1
            return np.random.dirichlet(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(np.random, name)

    def __init__(self):
        self.random = CountingNumpy.Random()

    def __getattr__(self, name):
        return getattr(np, name)


def reference_function(reference_dir, name, numpy_module=np):
    """A function of the reference's classification/datasets/data_loading.py, taken out of its module (which imports
    torch, torchvision and webdataset) and run as it is, with `numpy_module` as its np and with time.
    scripts/reference_compare.py takes sort_by_dirichlet from here too."""
    path = os.path.join(reference_dir, "classification", "datasets", "data_loading.py")
    tree = ast.parse(open(path).read(), path)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": numpy_module, "time": time}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), namespace)
    return namespace[name]


def sort_by_dirichlet_cases(sort_by_dirichlet, counting):
    """One domain's correlated order as get_test_loader makes it: labels of n samples from `classes` classes
    (label of sample i: (i * 7 + i // 13) % classes, then a Python random.shuffle of the samples under seed 99, so
    that the classes interleave as a shuffled CIFAR-C block's do), np.random.seed(s),
    sort_by_dirichlet(delta, [(i, label_i)]). Stored: the sample indices in their new order, and the attempts the
    reference made (its np.random.dirichlet calls / classes)."""
    cases = []
    for s, delta, classes, n in [(1, 0.1, 10, 10000), (2, 0.01, 10, 2000), (3, 1.0, 10, 1000), (1, 10.0, 10, 500),
                                 (2020, 0.01, 100, 10000), (2021, 0.1, 100, 5000), (1, 0.05, 10, 200), (4, 0.1, 3, 60),
                                 (1, 0.1, 10, 120), (7, 0.3, 20, 250)]:
        labels = [(i * 7 + i // 13) % classes for i in range(n)]
        r = random.Random(99)
        r.shuffle(labels)
        samples = list(enumerate(labels))
        np.random.seed(s)
        counting.random.dirichlet_calls = 0
        out = sort_by_dirichlet(delta, samples=samples)
        order = [i for i, _ in out]
        assert sorted(order) == list(range(n))
        assert counting.random.dirichlet_calls % classes == 0
        cases.append({"seed": str(s), "delta": delta, "classes": classes, "n": n, "labels_head": labels[:HEAD],
                      "labels_poly": digest(labels)["poly"], "attempts": counting.random.dirichlet_calls // classes,
                      **digest(order)})
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-dir", default="/work/refs/test-time-adaptation")
    args = p.parse_args()
    data = {"generator": "scripts/make_dirichlet_fixtures.py", "python": sys.version.split()[0], "numpy": np.__version__}
    counting = CountingNumpy()
    sort_by_dirichlet = reference_function(args.reference_dir, "sort_by_dirichlet", counting)
    write_fixture(OUT, data, [(legacy_draw_cases, legacy_draw_cases), (dirichlet_cases, dirichlet_cases),
                              (pairwise_sum_cases, pairwise_sum_cases),
                              (sort_by_dirichlet_cases, lambda: sort_by_dirichlet_cases(sort_by_dirichlet, counting))])


if __name__ == "__main__":
    main()
