#!/usr/bin/env bash
# Times one adaptation step per method in PyTorch (benchmarks/pytorch_reference.py) and in SwiftTTA
# (tta-bench steps) on the same models, batch sizes and thread count, one after the other, and prints
# per method images/s (fastest run) and peak resident memory of both sides, with Swift / PyTorch ratios.
#
#     benchmarks/compare_steps.sh [--threads N] [--model wideresnet-D-W[,...]] [--batch N[,...]]
#                                 [--methods source,norm_test,tent,cotta,cotta-noaug] [--warmup W] [--runs R]
#                                 [--portable] [--no-build] [--torch-heap default|keep] [--out DIR]
#
# Defaults: WRN-28-10 at batch 200 and WRN-16-2 at batch 64, all five methods, warm-up 1, 3 runs.
# Builds tta-bench in release first as the default build does (TTA_TARGET_CPU=auto: the FMA kernel on an
# AVX2+FMA x86-64 host), or with TTA_TARGET_CPU=portable under --portable (as compare_gemm.sh).
# Set SCRATCH to choose the build folder (default: .build-bench-native / .build-bench-portable);
# --no-build uses $SCRATCH/release/tta-bench as it is. The JSON reports and the merged table stay in
# --out (default: results/steps-<date>).
# tta-bench keeps freed memory in the heap (ProcessMemory.HeapPolicy.keepFreed, as tta does); PyTorch runs
# with glibc's defaults, as its users run it, unless --torch-heap keep gives it the same policy through
# GLIBC_TUNABLES (no mmap, trim threshold 16 GiB).
set -euo pipefail

cd "$(dirname "$0")/.."
threads=$(nproc)
models=""
batches=""
methods="source,norm_test,tent,cotta,cotta-noaug"
warmup=1
runs=3
portable=0
build=1
torch_heap=default
out="results/steps-$(date +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --model) models="$2"; shift 2 ;;
        --batch) batches="$2"; shift 2 ;;
        --methods) methods="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --portable) portable=1; shift ;;
        --no-build) build=0; shift ;;
        --torch-heap) torch_heap="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_steps.sh: unknown option $1" >&2; exit 2 ;;
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
[[ -x $bench ]] || { echo "compare_steps.sh: no $bench (build it, or drop --no-build)" >&2; exit 1; }

common=(--methods "$methods" --warmup "$warmup" --runs "$runs" --threads "$threads")
[[ -n $models ]] && common+=(--model "$models")
[[ -n $batches ]] && common+=(--batch "$batches")

case "$torch_heap" in
    default) torch_env=() ;;
    keep) torch_env=(GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184) ;;
    *) echo "compare_steps.sh: --torch-heap takes default or keep, got '$torch_heap'" >&2; exit 2 ;;
esac
echo "PyTorch heap: $torch_heap" | tee "$out/torch_heap.txt"
env "${torch_env[@]}" python3 benchmarks/pytorch_reference.py "${common[@]}" --json "$out/pytorch.json" | tee "$out/pytorch.txt"
echo
"$bench" steps "${common[@]}" --json "$out/swift.json" | tee "$out/swift.txt"
echo

python3 - "$out" <<'EOF' | tee "$out/compare.txt"
import json, sys
out = sys.argv[1]
swift = json.load(open(f"{out}/swift.json"))
torch = json.load(open(f"{out}/pytorch.json"))
ref = {(r["model"], r["batch"], r["method"]): r for r in torch["results"]}
mib = 1 << 20
print(f"SwiftTTA ({swift['kernel']}) vs PyTorch ({torch['kernel']}), {swift['threads']} thread(s); "
      f"one step per batch, img/s of the fastest of {swift['results'][0]['runs'] if swift['results'] else 0} run(s); "
      f"peak RSS per method")
print(f"heap: Swift keeps freed memory; PyTorch {open(f'{out}/torch_heap.txt').read().split(': ')[1].strip()}")
print(f"augmentation: Swift {swift['augmentation']}; PyTorch {torch['augmentation']}")
print(f"{'model':>18}{'batch':>6}{'method':>12}{'swift img/s':>13}{'torch img/s':>13}{'ratio':>8}"
      f"{'swift MiB':>11}{'torch MiB':>11}{'ratio':>8}")
for r in swift["results"]:
    t = ref.get((r["model"], r["batch"], r["method"]))
    if t is None:
        continue
    s_ips, t_ips = r["images_per_second_min_time"], t["images_per_second_min_time"]
    s_mem, t_mem = r["peak_memory_bytes"] / mib, t["peak_memory_bytes"] / mib
    print(f"{r['model']:>18}{r['batch']:>6}{r['method']:>12}{s_ips:>13.1f}{t_ips:>13.1f}{s_ips / t_ips:>7.2f}x"
          f"{s_mem:>11.1f}{t_mem:>11.1f}{s_mem / t_mem:>7.2f}x")
before = lambda rep: max((r["resident_before_bytes"] for r in rep["results"]), default=0) / mib
print(f"resident before the model is built: Swift {before(swift):.0f} MiB, PyTorch {before(torch):.0f} MiB "
      f"(interpreter and torch libraries; included in the peaks)")
EOF
