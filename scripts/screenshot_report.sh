#!/usr/bin/env bash
# Render a report.html with headless Chromium (Debian package `chromium`) to a PNG, so a
# person can look at what the browser shows. Usage: scripts/screenshot_report.sh REPORT.html OUT.png [HEIGHT]
set -euo pipefail
report=$(realpath "$1")
out=$(realpath -m "$2")
height=${3:-6000}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium not found: apt-get install chromium" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1200,"$height" \
  --screenshot="$out" "file://$report" >/dev/null 2>&1
test -s "$out"
echo "screenshot: $out"
