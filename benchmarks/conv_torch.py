#!/usr/bin/env python3
"""Times PyTorch's CPU convolution on the layer shapes of `tta-bench conv`, for comparison.

    python3 benchmarks/conv_torch.py [--batch N] [--threads N] [--runs N] [--layers LIST]
                                     [--directions forward,input,weight] [--json FILE]

Each direction is one aten call: `conv2d` (forward) and `convolution_backward` with an output mask
that asks for the input gradient only or the weight gradient only. Timing mirrors tta-bench conv:
one warm-up, then --runs timed runs (default 2); the fastest and the median are reported.
"""
import argparse
import json
import time

# name: (in channels, input side, out channels, kernel, stride): WRN-28-10 on 32x32 inputs, as
# ConvLayer.wrn28x10 in benchmarks/tta-bench/ConvBench.swift.
LAYERS = {
    "stem": (3, 32, 16, 3, 1),
    "g1.first": (16, 32, 160, 3, 1),
    "g1.short": (16, 32, 160, 1, 1),
    "g1.conv": (160, 32, 160, 3, 1),
    "g2.first": (160, 32, 320, 3, 2),
    "g2.short": (160, 32, 320, 1, 2),
    "g2.conv": (320, 16, 320, 3, 1),
    "g3.first": (320, 16, 640, 3, 2),
    "g3.short": (320, 16, 640, 1, 2),
    "g3.conv": (640, 8, 640, 3, 1),
}
DIRECTIONS = ("forward", "input", "weight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--json", help="write all results as JSON")
    args = parser.parse_args()
    layers = args.layers.split(",")
    directions = args.directions.split(",")
    for name in layers:
        if name not in LAYERS:
            parser.error(f"--layers: unknown layer '{name}' (known: {','.join(LAYERS)})")
    for d in directions:
        if d not in DIRECTIONS:
            parser.error(f"--directions: expected forward, input or weight, got '{d}'")

    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"conv: torch {torch.__version__}, batch {args.batch}, {args.threads} thread(s), "
          f"warm-up 1, {args.runs} timed run(s)")
    print(f"{'layer':>10}{'dir':>8}{'ms min':>10}{'GFLOP/s':>9}")
    results = []
    with torch.no_grad():
        for name in layers:
            c, h, o, k, s = LAYERS[name]
            x = torch.rand(args.batch, c, h, h) * 2 - 1
            w = (torch.rand(o, c, k, k) * 2 - 1) * 0.1
            p = k // 2
            ho = (h + 2 * p - k) // s + 1
            dy = torch.rand(args.batch, o, ho, ho) * 2 - 1
            flops = 2.0 * args.batch * o * ho * ho * c * k * k
            for d in directions:
                if d == "forward":
                    call = lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=p)
                else:
                    mask = [d == "input", d == "weight", False]
                    call = lambda: torch.ops.aten.convolution_backward(
                        dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
                call()
                runs = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    call()
                    runs.append(time.perf_counter() - start)
                runs.sort()
                best, median = runs[0], runs[len(runs) // 2]
                results.append({"layer": name, "direction": d, "batch": args.batch, "threads": args.threads,
                                "runs": len(runs), "seconds_min": best, "seconds_median": median,
                                "gflops_min_time": flops / best * 1e-9})
                print(f"{name:>10}{d:>8}{best * 1e3:>10.1f}{flops / best * 1e-9:>9.1f}", flush=True)
    print(f"sum of the fastest runs: {sum(r['seconds_min'] for r in results):.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "conv", "library": f"torch {torch.__version__}", "batch": args.batch,
                       "threads": args.threads, "results": results}, f, indent=2, sort_keys=True)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
