#!/usr/bin/env python3
"""Times numpy matmul (OpenBLAS sgemm) on the shapes of `tta-bench gemm`, for comparison.

    python3 benchmarks/gemm_numpy.py [--threads N] [--json FILE] [--runs N]
                                     [--shapes square|conv|all|MxNxK,...] [--trans NN|NT|TN|TT]

The thread count is put into OPENBLAS_NUM_THREADS / OMP_NUM_THREADS (and friends) before numpy is
imported, since OpenBLAS reads it only once. Timing mirrors tta-bench: one warm-up, then at least
5 runs (more until about a second has passed, at most 50); GFLOP/s from the fastest and the median run.
"""
import argparse
import json
import os
import sys
import time


def standard_shapes(spec):
    square = [(s, s, s) for s in (256, 512, 1024, 2048)]
    conv = [(160, 1024, 144), (160, 1024, 1440), (320, 256, 1440),
            (320, 256, 2880), (640, 64, 2880), (640, 64, 5760)]
    batched = [(m, n * 8, k) for (m, n, k) in conv]
    if spec == "square":
        return square
    if spec == "conv":
        return conv + batched
    if spec == "all":
        return square + conv + batched
    shapes = []
    for item in spec.split(","):
        parts = item.split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            sys.exit(f"gemm_numpy.py: bad shape '{item}': expected MxNxK")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="write all results as JSON")
    parser.add_argument("--runs", type=int, help="timed runs per shape (default: adaptive, at least 5)")
    parser.add_argument("--shapes", default="all")
    parser.add_argument("--trans", default="NN", choices=["NN", "NT", "TN", "TT"])
    args = parser.parse_args()

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np  # after the thread variables: OpenBLAS reads them when it loads

    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")
        blas_info = info.get("Build Dependencies", {}).get("blas", {})
        blas = f"{blas_info.get('name', '?')} {blas_info.get('version', '')}".strip()
    except Exception:
        pass

    trans_a, trans_b = args.trans[0] == "T", args.trans[1] == "T"
    print(f"gemm: numpy {np.__version__} matmul ({blas}), {args.threads} thread(s); "
          "GFLOP/s from the fastest and the median run")
    header = f"{'shape MxNxK':>16}{'op':>4}{'runs':>6}{'ms min':>10}{'GFLOP/s':>10}{'median':>10}"
    print(header)
    print("-" * len(header))

    rng = np.random.default_rng(0)
    results = []
    for (m, n, k) in standard_shapes(args.shapes):
        # Same stored layouts as tta-bench: A is m x k (k x m transposed), B is k x n (n x k transposed).
        a = rng.uniform(-1, 1, (k, m) if trans_a else (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, (n, k) if trans_b else (k, n)).astype(np.float32)
        op_a = a.T if trans_a else a
        op_b = b.T if trans_b else b
        c = np.empty((m, n), dtype=np.float32)

        np.matmul(op_a, op_b, out=c)  # warm-up
        runs, total = [], 0.0
        while len(runs) < (args.runs or 5) or (args.runs is None and total < 1.0 and len(runs) < 50):
            start = time.perf_counter()
            np.matmul(op_a, op_b, out=c)
            elapsed = time.perf_counter() - start
            runs.append(elapsed)
            total += elapsed
        runs.sort()
        best = runs[0]
        median = runs[len(runs) // 2] if len(runs) % 2 else 0.5 * (runs[len(runs) // 2 - 1] + runs[len(runs) // 2])
        flops = 2.0 * m * n * k
        result = {
            "m": m, "n": n, "k": k, "trans": args.trans, "threads": args.threads, "runs": len(runs),
            "seconds_min": best, "seconds_median": median,
            "gflops_min_time": flops / best * 1e-9, "gflops_median": flops / median * 1e-9,
        }
        results.append(result)
        print(f"{f'{m}x{n}x{k}':>16}{args.trans:>4}{len(runs):>6}{best * 1e3:>10.3f}"
              f"{result['gflops_min_time']:>10.1f}{result['gflops_median']:>10.1f}", flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "gemm", "library": f"numpy {np.__version__} ({blas})",
                       "threads": args.threads, "results": results}, f, indent=2, sort_keys=True)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
