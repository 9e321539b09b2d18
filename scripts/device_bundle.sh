#!/usr/bin/env bash
# Build .device/: what the lent GPU machine lacks for scripts/gpu_check.sh, carried there with the tree.
#   bash scripts/device_bundle.sh        (from anywhere; idempotent: a second run downloads nothing)
#
# Why a bundle: the GPU machine (Python 3.12, torch with CUDA, accelerate, transformers, peft,
# tensorstore, numpy, imageio, opencv-headless, ...) reaches no package registry and takes at
# most 64 MiB per call, working tree included. So this script fetches here, by package name:
#   wheels/   cp312 manylinux x86_64 wheels of f1's needs that machine lacks (versions = this venv's)
#   debs/     the Vulkan/EGL loaders (libvulkan1, libglvnd...) and libX11, which SAPIEN's renderer
#             links; the GPU's own Vulkan driver (ICD) comes from its NVIDIA driver
#   robot_assets.tar.xz   panda/: panda_v2.urdf and only the meshes it names (mani-skill's wheel is
#             ~100 MB; xz takes the 11 MB of meshes to 3 MB)
# and keeps the bundle under BUNDLE_LIMIT_MIB. Raw downloads stay in .device-cache/ (never carried).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BUNDLE=.device
CACHE=.device-cache
BUNDLE_LIMIT_MIB=60

# What the GPU machine lacks: f1's own needs (pyproject) plus their needs, minus what it has.
# sapien also wants opencv-python (that machine's opencv-python-headless gives the same cv2), lxml,
# networkx, requests (there). imageio-ffmpeg is pinned to 0.5.1: its ffmpeg 4.2 build is 74 MB
# unpacked against 0.8's 173 MB, and f1 writes its sample videos through it.
WHEELS=(sapien zarr numcodecs webdataset gymnasium google-crc32c donfig braceexpand farama-notifications
        transforms3d pyperclip)
PINNED=(imageio-ffmpeg==0.5.1)
# libx11-6 and what it links (libxcb1 ...): SAPIEN's libsvulkan2.so needs libX11.so.6 even headless.
DEBS=(libvulkan1 libglvnd0 libegl1 libglx0 libgl1 libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)

test -x "$PY" || { echo "error: $PY not found; run \`make venv\` first (the bundle pins this venv's versions)" >&2; exit 2; }
mkdir -p "$CACHE/wheels" "$CACHE/debs" "$BUNDLE/wheels" "$BUNDLE/debs"

# ---- wheels: the versions this venv runs the tests with, for CPython 3.12 on manylinux x86_64
specs=("${PINNED[@]}")
for name in "${WHEELS[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    specs+=("$name==$version")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux2010_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
# pip download skips a wheel already in the folder, so a rerun fetches nothing.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --abi abi3 --abi none "${platforms[@]}" -d "$CACHE/wheels" "${specs[@]}" 2>&1 | grep -v "^WARNING: Location" || true

keep=()
for spec in "${specs[@]}"; do
    name=${spec%%==*}; version=${spec##*==}
    stem=$(echo "$name" | tr - _)
    src=$(ls "$CACHE"/wheels/"$stem"-"$version"-*.whl 2>/dev/null | head -n 1)
    test -n "$src" || { echo "error: no cp312 manylinux wheel of $spec was downloaded" >&2; exit 1; }
    dst="$BUNDLE/wheels/$(basename "$src")"
    keep+=("$dst")
    # Already made from this download by this slim_wheel.py: LZMA costs a minute, skip it.
    [[ -f $dst && $dst -nt $src && $dst -nt scripts/slim_wheel.py && $dst -nt $0 ]] && continue
    case $name in
        # The parts f1 never runs: the denoiser's CUDA module (libsvulkan2.so links the denoiser's
        # core, so that stays), the stereo depth sensor's IR patterns, C++ headers, macOS builds.
        sapien) "$PY" scripts/slim_wheel.py "$src" "$dst" --drop 'sapien/oidn_library/*device_cuda*' \
                    --drop 'sapien/sensor/assets/patterns/*' --drop 'sapien/include/*' --drop '*.dylib' >/dev/null ;;
        transforms3d) "$PY" scripts/slim_wheel.py "$src" "$dst" --drop 'transforms3d/tests/*' >/dev/null ;;
        # Big compiled files: LZMA makes them about a quarter smaller than deflate.
        numcodecs) "$PY" scripts/slim_wheel.py "$src" "$dst" --drop 'numcodecs/tests/*' >/dev/null ;;
        imageio-ffmpeg) "$PY" scripts/slim_wheel.py "$src" "$dst" >/dev/null ;;
        *) cp "$src" "$dst" ;;
    esac
done
for whl in "$BUNDLE"/wheels/*.whl; do  # no stale version may linger beside a new one: pip refuses two
    [[ " ${keep[*]} " == *" $whl "* ]] || rm -f "$whl"
done

# ---- debs: apt-get download fetches a package alone (no dependencies), for amd64, into the cache
missing_debs=()
for deb in "${DEBS[@]}"; do ls "$CACHE"/debs/"$deb"_*.deb >/dev/null 2>&1 || missing_debs+=("$deb"); done
if (( ${#missing_debs[@]} )); then
    lists=$PWD/$CACHE/apt-lists
    mkdir -p "$lists/partial"
    apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
    apt-get "${apt_opts[@]}" -qq update
    # apt warns that its _apt user cannot write here (we are root): harmless, the download is ours.
    (cd "$CACHE/debs" && apt-get "${apt_opts[@]}" -qq download "${missing_debs[@]}" 2>&1 | grep -v "unsandboxed" || true)
fi
rm -f "$BUNDLE"/debs/*.deb
for deb in "${DEBS[@]}"; do cp "$CACHE"/debs/"$deb"_*.deb "$BUNDLE/debs/"; done

# ---- the Panda: the URDF and the meshes it names, from the installed mani-skill (never imported)
rm -rf "$BUNDLE/robot_assets" "$CACHE/robot_assets"
"$PY" - "$CACHE/robot_assets/panda" <<'EOF'
import shutil, sys
from pathlib import Path
from f1.collect.assets import panda_urdf_path, referenced_meshes

src, dst = panda_urdf_path(), Path(sys.argv[1])   # panda_urdf_path(): mani-skill's, unless overridden
if dst.resolve() == src.parent.resolve():
    sys.exit("error: F1_ROBOT_ASSETS points at the bundle itself; unset it to rebuild from mani-skill")
shutil.rmtree(dst, ignore_errors=True)
for name in [src.name, *referenced_meshes(src)]:
    (dst / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.parent / name, dst / name)
EOF
# Fixed owner, order and time stamps: the same files give the same archive on every run.
tar -C "$CACHE/robot_assets" --sort=name --owner=0 --group=0 --numeric-owner --mtime=2024-01-01 -cf - panda \
    | xz -6 -T1 > "$BUNDLE/robot_assets.tar.xz.tmp"
mv "$BUNDLE/robot_assets.tar.xz.tmp" "$BUNDLE/robot_assets.tar.xz"

# ---- size check, then what to run
bytes=$(du -sb "$BUNDLE" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "bundle $BUNDLE: $(find "$BUNDLE/wheels" -name '*.whl' | wc -l) wheels, $(find "$BUNDLE/debs" -name '*.deb' | wc -l) debs," \
     "$(find "$CACHE/robot_assets" -type f | wc -l) Panda files (xz); ${mib} MiB (limit ${BUNDLE_LIMIT_MIB} MiB)"
if (( bytes > BUNDLE_LIMIT_MIB * 1048576 )); then
    echo "error: the bundle is over ${BUNDLE_LIMIT_MIB} MiB; drop something from it" >&2
    exit 1
fi
echo "carry: [\"$BUNDLE\"]"
echo "device command (timeout_s 540): bash scripts/gpu_check.sh"
