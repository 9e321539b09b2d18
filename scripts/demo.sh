#!/usr/bin/env bash
# The main job end to end on a tiny default, on the CPU, in a few minutes.
set -euo pipefail
OUT=${DEMO_OUT:-demo_out}
rm -rf "$OUT"
mkdir -p "$OUT"
f1 --version
f1 train --help >/dev/null
echo "[demo] later stages are wired in as they land"
