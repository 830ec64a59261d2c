#!/usr/bin/env bash
# Times numpy/OpenBLAS and tta-bench's gemmSIMD on the same shapes and thread count, one after the
# other, and prints GFLOP/s (fastest run) and the ratio Swift / numpy per shape.
#
#     benchmarks/compare_gemm.sh [--threads N] [--shapes square|conv|all|MxNxK,...] [--trans NN|NT|TN|TT]
#                                [--rounds R] [--portable] [--no-build] [--out DIR]
#
# Builds tta-bench in release first as the default build does (TTA_TARGET_CPU=auto: the FMA kernel on an
# AVX2+FMA x86-64 host), or with TTA_TARGET_CPU=portable under --portable.
# Set SCRATCH to choose the build folder (default: .build-bench-native / .build-bench-portable);
# --no-build uses $SCRATCH/release/tta-bench as it is (e.g. a saved binary of an earlier commit).
# --rounds R alternates numpy and Swift R times and keeps each side's best per shape, which evens
# out a shared, noisy machine. The JSON reports and the merged table stay in --out
# (default: results/gemm-<date>).
set -euo pipefail

cd "$(dirname "$0")/.."
threads=$(nproc)
shapes=all
trans=NN
portable=0
build=1
rounds=1
out="results/gemm-$(date +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --shapes) shapes="$2"; shift 2 ;;
        --trans) trans="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --portable) portable=1; shift ;;
        --no-build) build=0; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_gemm.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"

if [[ $portable == 1 ]]; then
    scratch="${SCRATCH:-.build-bench-portable}"
    [[ $build == 1 ]] && TTA_TARGET_CPU=portable swift build -c release --product tta-bench --scratch-path "$scratch" >&2
else
    scratch="${SCRATCH:-.build-bench-native}"
    [[ $build == 1 ]] && TTA_TARGET_CPU=auto swift build -c release --product tta-bench --scratch-path "$scratch" >&2
fi
bench="$scratch/release/tta-bench"

for ((round = 1; round <= rounds; round++)); do
    [[ $rounds -gt 1 ]] && echo "== round $round of $rounds"
    python3 benchmarks/gemm_numpy.py --threads "$threads" --shapes "$shapes" --trans "$trans" \
        --json "$out/numpy-$round.json"
    echo
    "$bench" gemm --threads "$threads" --shapes "$shapes" --trans "$trans" --json "$out/swift-$round.json" \
        --numpy "$out/numpy-$round.json"
    echo
done

python3 - "$out" "$rounds" <<'EOF' | tee "$out/compare.txt"
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])

peaks = []

def best(side):
    """Per shape, the record with the highest GFLOP/s (fastest run) over all rounds."""
    report, records = None, {}
    for r in range(1, rounds + 1):
        report = json.load(open(f"{out}/{side}-{r}.json"))
        peaks.extend(report.get("fma_peak_gflops", []))
        for rec in report["results"]:
            key = (rec["m"], rec["n"], rec["k"], rec["trans"])
            if key not in records or rec["gflops_min_time"] > records[key]["gflops_min_time"]:
                records[key] = rec
    return report, records

numpy, ref = best("numpy")
swift, own = best("swift")
print(f"Swift ({swift['kernel']}) vs {numpy['library']}, {swift['threads']} thread(s), "
      f"GFLOP/s of the fastest run, best of {rounds} round(s)")
print(f"{'shape MxNxK':>16}{'op':>4}{'swift':>9}{'numpy':>9}{'ratio':>8}")
ratios = []
for key, r in own.items():
    n = ref.get(key)
    if n is None:
        continue
    ratio = r["gflops_min_time"] / n["gflops_min_time"]
    ratios.append(ratio)
    name = "%dx%dx%d" % (r["m"], r["n"], r["k"])
    print(f"{name:>16}{r['trans']:>4}{r['gflops_min_time']:>9.1f}{n['gflops_min_time']:>9.1f}{ratio:>7.2f}x")
if ratios:
    geo = 1.0
    for x in ratios:
        geo *= x
    print(f"geometric mean ratio: {geo ** (1 / len(ratios)):.2f}x over {len(ratios)} shapes")
if peaks:
    print(f"FMA peak measured around the Swift rounds: {min(peaks):.1f}-{max(peaks):.1f} GFLOP/s "
          f"(a quiet machine: about 95 per core)")
EOF
