#!/usr/bin/env bash
# Renders a `tta --report` HTML page with headless Chromium to a PNG, to check that it looks right
# in a real browser (then look at the PNG).
#
#   scripts/check_report.sh [REPORT.html [OUT.png]]
#
# Without REPORT, makes one first: `tta compare` on the embedded benchmark (source, norm_test, tent;
# a few corruptions, so it takes well under a minute). Installs Debian's `chromium` if missing.
# TTA_SCRATCH sets SwiftPM's scratch path (default .build).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update && apt-get install -y chromium
fi

report=${1:-}
if [ -z "$report" ]; then
    dir=$(mktemp -d)
    report="$dir/report.html"
    swift run -c release --scratch-path "${TTA_SCRATCH:-.build}" tta compare \
        --methods source,norm_test,tent --corruptions gaussian_noise,shot_noise,impulse_noise,defocus_blur,fog,contrast \
        --quiet --report "$report" >/dev/null
fi
[ -f "$report" ] || { echo "check_report.sh: no such file: $report" >&2; exit 1; }
png=${2:-${report%.html}.png}

# --no-sandbox: Chromium refuses to run as root otherwise. The window matches a laptop screen.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$png" --window-size=1280,1600 "file://$(realpath "$report")" 2>/dev/null
[ -s "$png" ] || { echo "check_report.sh: chromium wrote no screenshot" >&2; exit 1; }

# What the browser built: the page as rendered (after any script), checked for the parts the report
# must have and for numbers that did not survive (NaN, Infinity, undefined).
dom=$(chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$(realpath "$report")" 2>/dev/null)
svgs=$(grep -o '<svg' <<<"$dom" | wc -l)
bars=$(grep -o '<rect' <<<"$dom" | wc -l)
lines=$(grep -o '<polyline\|<path' <<<"$dom" | wc -l)
echo "check_report.sh: $svgs SVG charts, $bars rects, $lines lines/paths in the rendered page" >&2
[ "$svgs" -ge 2 ] || { echo "check_report.sh: expected at least 2 SVG charts (bars, running error), found $svgs" >&2; exit 1; }
if grep -q 'NaN\|Infinity\|undefined' <<<"$dom"; then
    echo "check_report.sh: the rendered page contains NaN, Infinity or undefined" >&2; exit 1
fi
grep -q 'http://\|https://' <(grep -o '\(src\|href\)="[^"]*"' <<<"$dom") && {
    echo "check_report.sh: the page loads something from the network" >&2; exit 1; }
echo "$png"
