#!/usr/bin/env python3
"""Print SwiftTTA's and the PyTorch reference's results side by side.

    python3 scripts/compare_results.py benchmarks/results/swifttta_fmnist_c.json \
        benchmarks/results/reference_fmnist_c.json

Both files have the shape of SwiftTTA's results file: {"runs": [{"method", "meanError",
"domains": [{"name", "error", ...}]}]}, errors in percent (`tta compare --format json` and
scripts/reference_compare.py --json). Rows: method x {SwiftTTA, reference, difference}; columns: the
domains in stream order, then the mean. The difference is SwiftTTA minus reference in points; with
`samples` in both files, a last column counts the images whose verdict differs in total
(sum over domains of |correct difference|, a lower bound on the flipped predictions).
A last table gives each run's wall time (`seconds` in both files) and the thread counts.

`--spread FILE` adds, for the methods FILE has, a second reference run (reference_compare.py with
`--method-seed`: the same stream, other torch draws) and its difference from the first: the
reference's own run-to-run spread, to judge the differences of the stochastic methods (CoTTA) by.
"""

import argparse
import json
import sys

SHORT = {"gaussian_noise": "gauss", "shot_noise": "shot", "impulse_noise": "impul", "defocus_blur": "defoc",
         "glass_blur": "glass", "motion_blur": "motn", "zoom_blur": "zoom", "snow": "snow", "frost": "frost",
         "fog": "fog", "brightness": "brit", "contrast": "contr", "elastic_transform": "elast",
         "pixelate": "pixel", "jpeg_compression": "jpeg"}


def load(path):
    with open(path) as f:
        data = json.load(f)
    runs = {r["method"]: r for r in data["runs"]}
    return data, runs


def label(d):
    return SHORT.get(d["name"], d["name"][:6]) + (str(d["severity"]) if d.get("severity", 5) != 5 else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("swift", help="SwiftTTA results JSON")
    p.add_argument("reference", help="reference results JSON")
    p.add_argument("--tolerance", type=float, default=0.5, help="flag |difference| above this many points (default 0.5)")
    p.add_argument("--spread", help="a second reference results JSON (another --method-seed)")
    args = p.parse_args()
    swift_file, swift = load(args.swift)
    ref_file, ref = load(args.reference)
    spread_file, spread = load(args.spread) if args.spread else ({}, {})
    spread_seed = spread_file.get("config", {}).get("methodSeed", "?")

    methods = [m for m in swift if m in ref] + [m for m in ref if m not in swift]
    out = []
    sc, rc = swift_file.get("config", {}), ref_file.get("config", {})
    stream = sc.get("stream", {})
    out.append(f"SwiftTTA:  {args.swift}  (version {swift_file.get('version', '?')}; weights {sc.get('weights', '?')}; "
               f"batch {stream.get('batchSize', '?')}, order {stream.get('order', '?')}, seed {stream.get('seed', '?')}, "
               f"severities {stream.get('severities', '?')}, setting {stream.get('setting', '?')})")
    out.append(f"reference: {args.reference}  ({rc.get('implementation', '?')}; weights {rc.get('weights', '?')}"
               + (f" sha256 {rc['weightsSha256'][:16]}" if "weightsSha256" in rc else "")
               + f"; batch {rc.get('batchSize', '?')}, order {rc.get('order', '?')}, seed {rc.get('seed', '?')}, "
               f"severities {rc.get('severities', '?')}, setting {rc.get('setting', '?')}; torch {rc.get('torch', '?')})")
    out.append("error in %; difference = SwiftTTA - reference in points; "
               f"'*' marks |difference| > {args.tolerance:g}"
               + (f"; ref spread = reference (torch seed {rc.get('methodSeed', rc.get('seed', '?'))}) - reference (torch seed {spread_seed}), "
                  "same stream" if args.spread else ""))
    out.append("")

    flagged = []
    header_done = False
    for m in methods:
        s, r = swift.get(m), ref.get(m)
        base = s or r
        names = [d["name"] + str(d.get("severity", "")) for d in base["domains"]]
        if not header_done:
            out.append(f"{'method':<10} {'impl.':<10} " + " ".join(f"{label(d):>6}" for d in base["domains"])
                       + f" {'mean':>7}  {'images':>6}")
            header_done = True
        rows = []
        for impl, run in (("SwiftTTA", s), ("reference", r)):
            if run is None:
                rows.append(f"{m:<10} {impl:<10} (no run)")
                continue
            errs = {d["name"] + str(d.get("severity", "")): d["error"] for d in run["domains"]}
            rows.append(f"{m:<10} {impl:<10} " + " ".join(f"{errs[n]:6.1f}" if n in errs else f"{'-':>6}" for n in names)
                        + f" {run['meanError']:7.2f}")
        if s is not None and r is not None:
            sd = {d["name"] + str(d.get("severity", "")): d for d in s["domains"]}
            rd = {d["name"] + str(d.get("severity", "")): d for d in r["domains"]}
            cells, flips = [], 0
            for n in names:
                if n in sd and n in rd:
                    diff = round(sd[n]["error"] - rd[n]["error"], 6) + 0.0  # no "-0.0" from float noise
                    mark = "*" if abs(diff) > args.tolerance + 1e-9 else " "
                    cells.append(f"{diff:+5.1f}{mark}")
                    if mark == "*":
                        flagged.append((m, n, diff))
                    if "correct" in sd[n] and "correct" in rd[n]:
                        flips += abs(sd[n]["correct"] - rd[n]["correct"])
                else:
                    cells.append(f"{'-':>6}")
            dm = round(s["meanError"] - r["meanError"], 6) + 0.0
            mm = "*" if abs(dm) > args.tolerance + 1e-9 else " "
            rows.append(f"{m:<10} {'difference':<10} " + " ".join(cells) + f" {dm:+6.2f}{mm} {flips:6d}")
        if m in spread and r is not None:
            r2 = spread[m]
            e2 = {d["name"] + str(d.get("severity", "")): d["error"] for d in r2["domains"]}
            e1 = {d["name"] + str(d.get("severity", "")): d["error"] for d in r["domains"]}
            rows.append(f"{m:<10} {'ref seed' + str(spread_seed):<10} " + " ".join(f"{e2[n]:6.1f}" if n in e2 else f"{'-':>6}" for n in names)
                        + f" {r2['meanError']:7.2f}")
            rows.append(f"{m:<10} {'ref spread':<10} " + " ".join(f"{round(e1[n] - e2[n], 6) + 0.0:+5.1f} " if n in e1 and n in e2 else f"{'-':>6}" for n in names)
                        + f" {round(r['meanError'] - r2['meanError'], 6) + 0.0:+6.2f}")
        out.extend(rows)
        out.append("")

    out.append(f"wall time in s (SwiftTTA {sc.get('threads', '?')} thread(s), reference {rc.get('threads', '?')} thread(s))")
    out.append(f"{'method':<10} {'SwiftTTA':>9} {'reference':>9}")
    for m in methods:
        t = [f"{x['seconds']:9.1f}" if x is not None and "seconds" in x else f"{'-':>9}" for x in (swift.get(m), ref.get(m))]
        out.append(f"{m:<10} {t[0]} {t[1]}")
    out.append("")

    if flagged:
        out.append(f"{len(flagged)} domain(s) differ by more than {args.tolerance:g} points: "
                   + ", ".join(f"{m}/{n} {d:+.1f}" for m, n, d in flagged))
    else:
        out.append(f"every domain agrees within {args.tolerance:g} points")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
