#!/usr/bin/env bash
# Times a whole continual CIFAR-10-C-layout run end to end: `tta run` against the PyTorch reference repo's
# own method class (scripts/reference_compare.py) on the same folder, weights, batch size and thread
# count, one after the other, and prints both runs' seconds, wall clock and peak resident memory with
# SwiftTTA / reference ratios, and whether the two sides' errors agree domain for domain.
#
#     benchmarks/compare_continual.sh [--per-domain K] [--method M] [--batch N] [--threads N]
#                                     [--data DIR] [--reference-dir DIR] [--checkpoint-every B]
#                                     [--no-build] [--out DIR]
#
# Defaults: K = 10000 (the full benchmark: 15 corruptions x 10,000 images at severity 5, 750 batches of
# 200; about 10 h SwiftTTA and 13 h reference on a 2-core Zen 3), tent, batch 200, all cores.
# The folder (--data, default results/continual-data-K) is written by scripts/make_timing_benchmark.py
# when it has no labels.npy yet: the embedded Fashion-MNIST-C images on three channels and RobustBench's
# WRN-28-10 with its seeded initialisation (untrained: the errors only show that both sides took the same
# steps on the same stream). Needs torch, numpy and safetensors, and a checkout of the reference repo
# (mariodoebler/test-time-adaptation; --reference-dir, default /work/refs/test-time-adaptation).
# Builds tta in release first (SCRATCH chooses the build folder, default .build); --no-build uses
# $SCRATCH/release/tta as it is. Logs, results files and compare.txt stay in --out
# (default: results/continual-<date>).
# Interruptions: both sides write a checkpoint every B batches (default 10) and at every domain boundary
# (SwiftTTA: tta run --checkpoint; reference: reference_compare.py --checkpoint, for source, norm_test,
# norm_alpha, tent and cotta). Run the same command again with the same --out and it goes on: a side with a
# complete results file is kept, the other resumes from its checkpoint. Each side's time (its results
# file's seconds, which a resumed run carries on from the checkpoint) then adds up the segments' work; the
# process records (<side>_process.json) hold one entry per segment: the checkout's commit, the SHA-256 of the
# program (the tta binary; reference_compare.py), what ran it (the Swift toolchain; Python, torch and a digest
# of the reference checkout's Python files), the CPU model and numpy's 1024^3 float32 GEMM speed at its
# start (a long run may span machines: compare.txt prints each side's range), wall clock, peak resident memory
# and the 1-minute load average sampled every minute, so that a disturbed segment shows.
# The checkpoints store only what the method changed (TENT: the BN parameters and the optimizer, well under
# 1 MB each), so the folder can be carried to another machine and resumed there.
set -euo pipefail

cd "$(dirname "$0")/.."
per_domain=10000
method=tent
batch=200
threads=$(nproc)
data=""
reference_dir=/work/refs/test-time-adaptation
build=1
every=10
out="results/continual-$(date +%Y%m%d-%H%M%S)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --per-domain) per_domain="$2"; shift 2 ;;
        --method) method="$2"; shift 2 ;;
        --batch) batch="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --reference-dir) reference_dir="$2"; shift 2 ;;
        --checkpoint-every) every="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare_continual.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $per_domain =~ ^[1-9][0-9]*$ ]] || { echo "compare_continual.sh: --per-domain takes a positive integer, got '$per_domain'" >&2; exit 2; }
[[ $every =~ ^[1-9][0-9]*$ ]] || { echo "compare_continual.sh: --checkpoint-every takes a positive number of batches, got '$every'" >&2; exit 2; }
data="${data:-results/continual-data-$per_domain}"
mkdir -p "$out"

scratch="${SCRATCH:-.build}"
[[ $build == 1 ]] && swift build -c release --product tta --scratch-path "$scratch" >&2
tta="$scratch/release/tta"
[[ -x $tta ]] || { echo "compare_continual.sh: no $tta (build it, or drop --no-build)" >&2; exit 1; }

if [[ ! -f $data/CIFAR-10-C/labels.npy || ! -f $data/wrn28_10.safetensors ]]; then
    python3 scripts/make_timing_benchmark.py --out "$data" --per-domain "$per_domain" --reference-dir "$reference_dir" >&2
fi

# The commit the segments run from (a long run resumed in several sessions may span more than one).
TTA_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- Sources Package.swift scripts 2>/dev/null || echo +changes)"
export TTA_COMMIT

# Runs a command, appends its stdout and stderr to the log files named, and appends a segment record to the
# JSON list in the file named: wall clock, peak resident set (VmHWM of the command's process, and at the end
# the larger of that and getrusage's children maximum: /usr/bin/time need not be installed), and the 1-minute
# load average at the start and every minute. The record is rewritten every minute, so a segment that is
# killed (exit null) keeps what it measured up to its last minute.
measured() {
    local json="$1" stdout="$2" stderr="$3"; shift 3
    python3 - "$json" "$stdout" "$stderr" "$@" <<'EOF'
import json, os, resource, subprocess, sys, threading, time
target, stdout, stderr, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
segments = json.load(open(target)) if os.path.exists(target) else []
# The machine's speed at the segment's start (a long run may span machines): numpy's float32 GEMM at 1024^3 on
# all cores, best of 5, and the CPU's model name.
import numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
calibration = 0.0
for _ in range(5):
    t0 = time.perf_counter(); a @ a; calibration = max(calibration, 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
start = time.time()
segment = {"command": cmd, "commit": os.environ.get("TTA_COMMIT"), "program_sha256": os.environ.get("TTA_PROGRAM"), "runtime": os.environ.get("TTA_RUNTIME"), "cpu": cpu, "numpy_sgemm_gflops": round(calibration, 1), "exit": None, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
           "wall_seconds": 0.0, "peak_rss_bytes": 0, "load_average_1min": [round(os.getloadavg()[0], 2)]}
segments.append(segment)
lock = threading.Lock()
def write():
    with lock:
        tmp = target + ".tmp"
        json.dump(segments, open(tmp, "w"))
        os.replace(tmp, target)
def peak_of(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
with open(stdout, "a") as o, open(stderr, "a") as e:
    child = subprocess.Popen(cmd, stdout=o, stderr=e)
    done = threading.Event()
    def sample():
        while not done.wait(60):
            segment["load_average_1min"].append(round(os.getloadavg()[0], 2))
            segment["peak_rss_bytes"] = max(segment["peak_rss_bytes"], peak_of(child.pid))
            segment["wall_seconds"] = round(time.time() - start, 2)
            write()
    threading.Thread(target=sample, daemon=True).start()
    write()
    rc = child.wait()
    done.set()
segment["wall_seconds"] = round(time.time() - start, 2)
segment["peak_rss_bytes"] = max(segment["peak_rss_bytes"], resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
segment["exit"] = rc
write()
sys.exit(rc)
EOF
}

# Whether a results file holds the whole run (every image of the 15 domains).
complete() {
    [[ -f $1 ]] && python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['runs'][0]; sys.exit(0 if sum(d['samples'] for d in r['domains']) == 15 * $per_domain else 1)" "$1"
}

# What runs each side, for its segment records: a long run may span machines, whose torch (say) may differ.
runtime() {
    case "$1" in
        swift) swift --version 2>/dev/null | head -1 ;;
        reference) python3 - "$reference_dir" <<'EOF'
import hashlib, os, platform, sys, torch
root = os.path.join(sys.argv[1], "classification")
h = hashlib.sha256()
for d, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for f in sorted(files):
        if f.endswith(".py"):
            path = os.path.join(d, f)
            h.update(os.path.relpath(path, root).encode()); h.update(open(path, "rb").read())
print(f"Python {platform.python_version()}, torch {torch.__version__}, reference classification/*.py sha256 {h.hexdigest()[:16]}")
EOF
        ;;
    esac
}

# side NAME LABEL PROGRAM COMMAND...: runs one side unless its results file ($out/NAME_<method>.json) is complete,
# with the checkpoint flags added, resuming from $out/NAME.checkpoint when there is one.
side() {
    local name="$1" label="$2" program="$3"; shift 3
    local results="$out/${name}_$method.json" ckpt="$out/$name.checkpoint" resume=()
    if complete "$results"; then
        echo "$label: $results is complete; kept" >&2
        return
    fi
    [[ -f $ckpt ]] && resume=(--resume "$ckpt")
    echo "$label: $* ${resume[*]} (log $out/$name.log)" >&2
    TTA_PROGRAM="$(sha256sum "$program" | cut -c1-16)" TTA_RUNTIME="$(runtime "$name")" measured "$out/${name}_process.json" "$out/$name.log" "$out/$name.err" "$@" \
        --checkpoint "$ckpt" --checkpoint-every "$every" "${resume[@]}"
}
side swift SwiftTTA "$tta" "$tta" run --method "$method" --data-dir "$data/CIFAR-10-C" --weights "$data/wrn28_10.safetensors" \
    --batch-size "$batch" --threads "$threads" --output "$out/swift_$method.json"
side reference reference scripts/reference_compare.py python3 scripts/reference_compare.py --reference-dir "$reference_dir" --data-dir "$data/CIFAR-10-C" \
    --weights "$data/wrn28_10.safetensors" --methods "$method" --batch-size "$batch" --threads "$threads" \
    --json "$out/reference_$method.json"

python3 - "$out" "$method" "$per_domain" "$batch" "$threads" <<'EOF' | tee "$out/compare.txt"
import json, sys
out, method, per_domain, batch, threads = sys.argv[1:]
swift = json.load(open(f"{out}/swift_{method}.json"))["runs"][0]
ref = json.load(open(f"{out}/reference_{method}.json"))["runs"][0]
segments = {side: json.load(open(f"{out}/{side}_process.json")) for side in ("swift", "reference")}
def total(side):
    ss = segments[side]
    loads = [l for s in ss for l in s["load_average_1min"]]
    return {"wall_seconds": sum(s["wall_seconds"] for s in ss), "peak_rss_bytes": max(s["peak_rss_bytes"] for s in ss),
            "segments": len(ss), "load": sum(loads) / len(loads), "load_max": max(loads),
            "calibration": [s["numpy_sgemm_gflops"] for s in ss if s.get("numpy_sgemm_gflops")],
            "programs": sorted({s["program_sha256"] for s in ss if s.get("program_sha256")}),
            "runtimes": sorted({s["runtime"] for s in ss if s.get("runtime")})}
sp, rp = total("swift"), total("reference")
images = sum(d["samples"] for d in swift["domains"])
print(f"continual CIFAR-10-C layout, {len(swift['domains'])} domains x {per_domain} images ({images:,} in all), "
      f"{method}, WRN-28-10, batch {batch}, {threads} thread(s)")
def hms(s):
    s = int(round(s)); return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
gib = 1024 ** 3
rows = [("run (results file)", swift["seconds"], ref["seconds"], hms),
        ("processes, wall", sp["wall_seconds"], rp["wall_seconds"], hms)]
print(f"{'':>22} {'SwiftTTA':>12} {'reference':>12} {'ratio':>8}")
for name, s, r, f in rows:
    print(f"{name:>22} {f(s):>12} {f(r):>12} {r / s:7.2f}x")
print(f"{'peak resident':>22} {sp['peak_rss_bytes'] / gib:10.2f} G {rp['peak_rss_bytes'] / gib:10.2f} G "
      f"{sp['peak_rss_bytes'] / rp['peak_rss_bytes']:7.2f}x")
print(f"{'images/s':>22} {images / swift['seconds']:12.2f} {images / ref['seconds']:12.2f}")
print(f"{'segments':>22} {sp['segments']:12d} {rp['segments']:12d}")
print(f"{'1-min load, mean/max':>22} {sp['load']:7.2f}/{sp['load_max']:4.1f} {rp['load']:7.2f}/{rp['load_max']:4.1f}")
def span(c):
    return f"{min(c):.0f}-{max(c):.0f}" if c else "-"
print(f"{'numpy GFLOP/s, segments':>22} {span(sp['calibration']):>12} {span(rp['calibration']):>12}   (the machine's speed at each segment's start)")
for side, t in (("SwiftTTA", sp), ("reference", rp)):
    print(f"{side} ran as {', '.join(t['programs']) or '-'} under {'; '.join(t['runtimes']) or '-'}"
          + ("" if len(t["programs"]) <= 1 and len(t["runtimes"]) <= 1 else "  (differs across segments)"))
diff = [(a["name"], a["error"], b["error"]) for a, b in zip(swift["domains"], ref["domains"]) if abs(a["error"] - b["error"]) > 1e-9]
print(f"mean error: SwiftTTA {swift['meanError']:.2f}%, reference {ref['meanError']:.2f}%; "
      + ("equal domain for domain" if not diff and len(swift["domains"]) == len(ref["domains"])
         else f"{len(diff)} domain(s) differ: " + ", ".join(f"{n} {a:.2f} vs {b:.2f}" for n, a, b in diff)))
print("ratios: time reference / SwiftTTA (above 1: SwiftTTA faster); memory SwiftTTA / reference (below 1: SwiftTTA smaller)")
EOF
