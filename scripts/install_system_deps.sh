#!/usr/bin/env bash
# Installs the system packages f1 needs on Debian 12, idempotently:
#   - a Vulkan loader and Mesa's software Vulkan driver (lavapipe) from
#     bookworm-backports, but only when no Vulkan device is usable already
#     (Debian 12's own Mesa 22 is too old for SAPIEN; backports ships 25.x);
#   - Debian's ffmpeg, for its shared libraries: torchcodec, the video decoder of LeRobot's reader in
#     the test that LeRobot reads f1's exports (tests/test_lerobot.py), loads them. f1 itself needs
#     none: imageio-ffmpeg and PyAV ship their own FFmpeg in their wheels.
# The backports source is derived from the machine's existing Debian source
# (same URIs and signing key), so no registry host is written here.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

have_vulkan_device() {
  # A usable ICD file plus the loader library is what SAPIEN needs.
  ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || return 1
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    ls "$d"/*.json >/dev/null 2>&1 && return 0
  done
  return 1
}

lavapipe_is_recent() {
  # Mesa 24.3+ is needed; dpkg reports the installed mesa-vulkan-drivers version.
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 24.3
}

if ! ldconfig -p 2>/dev/null | grep -q 'libavdevice.so'; then
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
    echo "[f1] installed $(dpkg-query -W -f='ffmpeg ${Version}' ffmpeg) (FFmpeg libraries for the LeRobot reader test)"
  else
    echo "[f1] warning: no apt-get; install FFmpeg's shared libraries by hand for tests/test_lerobot.py's LeRobot reader check." >&2
  fi
fi

if have_vulkan_device && { ! dpkg-query -W mesa-vulkan-drivers >/dev/null 2>&1 || lavapipe_is_recent; }; then
  echo "[f1] Vulkan device found; no other system packages needed."
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "[f1] error: no Vulkan device and no apt-get; install a Vulkan driver (Mesa >= 24.3 lavapipe or a GPU driver) by hand." >&2
  exit 2
fi

src=/etc/apt/sources.list.d/f1-bookworm-backports.sources
if [ ! -f "$src" ]; then
  base=/etc/apt/sources.list.d/debian.sources
  if [ -f "$base" ]; then
    # Take the stanza that serves the 'bookworm' suite and re-point it at backports.
    uris=$(awk 'BEGIN{RS="";FS="\n"} /Suites:[^\n]*bookworm( |$|\n)/ && !/security/ {for(i=1;i<=NF;i++) if($i ~ /^URIs:/){sub(/^URIs:[ ]*/,"",$i); print $i; exit}}' "$base")
    key=$(awk 'BEGIN{RS="";FS="\n"} /Suites:[^\n]*bookworm( |$|\n)/ && !/security/ {for(i=1;i<=NF;i++) if($i ~ /^Signed-By:/){sub(/^Signed-By:[ ]*/,"",$i); print $i; exit}}' "$base")
  else
    line=$(grep -hE '^deb .* bookworm( |$)' /etc/apt/sources.list | grep -v security | head -n1)
    uris=$(echo "$line" | awk '{print $2}')
    key=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  if [ -z "${uris:-}" ]; then
    echo "[f1] error: found no Debian bookworm apt source to derive bookworm-backports from; add one by hand." >&2
    exit 2
  fi
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uris" "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" | $SUDO tee "$src" >/dev/null
  echo "[f1] added bookworm-backports source ($uris)"
fi

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
echo "[f1] installed $(dpkg-query -W -f='mesa-vulkan-drivers ${Version}' mesa-vulkan-drivers)"
