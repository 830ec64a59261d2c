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
echo "$png"
