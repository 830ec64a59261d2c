#!/usr/bin/env bash
# Builds and runs the coverage-guided fuzz targets under Tests/Fuzz/ (libFuzzer + AddressSanitizer).
#
#   scripts/fuzz.sh <safetensors|npy|jpeg|cli|all> [seconds]    run one target (or each in turn); default 60 s
#   scripts/fuzz.sh build [target…]                             only build
#   scripts/fuzz.sh repro <target> <input-file>…                run the target once on given inputs
#
# The library modules a target needs are compiled straight from Sources/ with swiftc, `-O` with all
# runtime checks on (TTAKernels too: SwiftPM builds it -Ounchecked, which would hide out-of-bounds
# accesses) and `-sanitize=fuzzer,address`, into .build-fuzz/ (git-ignored); objects are rebuilt only
# when their sources change. Each run starts from the committed seed corpus Tests/Fuzz/corpus/<target>/,
# copied to a scratch working corpus under .build-fuzz/work/<target>/ (the committed corpus never
# grows). Crash, leak, timeout (-timeout=10 s) and out-of-memory inputs land in
# .build-fuzz/artifacts/<target>/. Extra libFuzzer flags can be passed in FUZZ_FLAGS.
# The exit status is libFuzzer's: 0 when the run ended without a finding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.build-fuzz"
targets=(safetensors npy jpeg cli)

# Module build order, and each module's dependencies (direct and indirect, as in Package.swift).
modules=(TTAKernels TTATensor TTANN TTAData TTAAugment TTAModels TTAAdaptation TTARuntime TTACLI)
dependencies_of() {
    case "$1" in
        TTAKernels) ;;
        TTATensor) echo TTAKernels ;;
        TTANN|TTAData|TTAAugment) echo TTAKernels TTATensor ;;
        TTAModels) echo TTAKernels TTATensor TTANN TTAData ;;
        TTAAdaptation) echo TTAKernels TTATensor TTANN TTAData TTAModels ;;
        TTARuntime) echo TTAKernels TTATensor TTANN TTAData TTAAugment TTAModels TTAAdaptation ;;
        TTACLI) echo TTAKernels TTATensor TTANN TTAData TTAAugment TTAModels TTAAdaptation TTARuntime ;;
    esac
}
modules_for() {
    case "$1" in
        safetensors|npy|jpeg) echo TTAKernels TTATensor TTAData ;;
        cli) echo "${modules[@]}" ;;
        *) echo "fuzz.sh: unknown target '$1' (expected one of: ${targets[*]}, all)" >&2; exit 64 ;;
    esac
}

swiftc_flags=(-O -parse-as-library -sanitize=fuzzer,address -swift-version 6 -g -enable-testing -package-name SwiftTTA)

build_module() {
    local m="$1" obj="$out/obj/$1.o"
    mkdir -p "$out/obj" "$out/modules"
    local sources
    sources=$(find "$root/Sources/$m" -name '*.swift' | sort)
    # Up to date when the object is newer than its sources and than the objects of its dependencies.
    local stale="" d
    [[ -f "$obj" ]] || stale=yes
    [[ -z "$stale" && -n "$(find "$root/Sources/$m" -name '*.swift' -newer "$obj")" ]] && stale=yes
    for d in $(dependencies_of "$m"); do
        [[ -z "$stale" && "$out/obj/$d.o" -nt "$obj" ]] && stale=yes
    done
    [[ -z "$stale" ]] && return 0
    echo "fuzz.sh: compiling $m" >&2
    # The object gets the time the compile started, so a source edited meanwhile counts as newer.
    local started="$out/obj/$m.started"
    touch "$started"
    # shellcheck disable=SC2086
    swiftc "${swiftc_flags[@]}" -wmo -module-name "$m" -I "$out/modules" \
        -emit-module -emit-module-path "$out/modules/$m.swiftmodule" \
        -c -o "$obj" $sources
    touch -r "$started" "$obj"
    rm -f "$started"
}

build_target() {
    local t="$1" mods objs=() bin="$out/bin/fuzz-$1"
    mods=$(modules_for "$t")
    for m in $mods; do build_module "$m"; objs+=("$out/obj/$m.o"); done
    mkdir -p "$out/bin"
    local main="$root/Tests/Fuzz/$t/main.swift"
    if [[ ! -f "$bin" || "$main" -nt "$bin" || -n "$(find "$out/obj" -name '*.o' -newer "$bin")" ]]; then
        echo "fuzz.sh: linking fuzz-$t" >&2
        # ld.gold warns "Cannot export local symbol" for the fuzzer entry point; harmless.
        swiftc "${swiftc_flags[@]}" -module-name "fuzz_$t" -I "$out/modules" "$main" "${objs[@]}" -o "$bin" \
            2> >(grep -v "Cannot export local symbol" >&2)
    fi
}

run_target() {
    local t="$1" seconds="$2" bin="$out/bin/fuzz-$1"
    local work="$out/work/$t" artifacts="$out/artifacts/$t" log="$out/logs/$t.log"
    rm -rf "$work"; mkdir -p "$work" "$artifacts" "$out/logs"
    cp "$root/Tests/Fuzz/corpus/$t/"* "$work/"
    local dict=()
    [[ -f "$root/Tests/Fuzz/$t/$t.dict" ]] && dict=(-dict="$root/Tests/Fuzz/$t/$t.dict")
    echo "fuzz.sh: running fuzz-$t for ${seconds}s (log: ${log#"$root"/})" >&2
    local status=0
    # shellcheck disable=SC2086
    ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0:${ASAN_OPTIONS:-}" \
        "$bin" "$work" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        ${FUZZ_FLAGS:-} >"$log" 2>&1 || status=$?
    local execs rate cov ft corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
    ft=$( (grep -o 'ft: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
    corpus=$( (grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" || true) | tail -1 | cut -d' ' -f2)
    local result="no crash"
    if [[ $status -ne 0 ]]; then
        result="FINDING (exit $status): $(grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|Fatal error|crashed:' "$log" || echo see log); input in ${artifacts#"$root"/}/"
    fi
    printf '%-12s %6ss  execs %-10s exec/s %-7s cov %-6s ft %-6s corpus %-12s %s\n' \
        "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$result"
    return $status
}

command="${1:-}"
case "$command" in
    build)
        shift
        for t in "${@:-${targets[@]}}"; do build_target "$t"; done
        ;;
    repro)
        t="${2:?usage: fuzz.sh repro <target> <input-file>…}"; shift 2
        build_target "$t"
        "$out/bin/fuzz-$t" -runs=1 "$@"
        ;;
    all)
        seconds="${2:-60}"; status=0
        for t in "${targets[@]}"; do build_target "$t"; done
        for t in "${targets[@]}"; do run_target "$t" "$seconds" || status=1; done
        exit $status
        ;;
    safetensors|npy|jpeg|cli)
        build_target "$command"
        run_target "$command" "${2:-60}"
        ;;
    *)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 64
        ;;
esac
