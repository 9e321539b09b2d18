#!/usr/bin/env bash
# The GPU path in one short run (at most ~8 minutes) on a lent GPU machine, from the bundle that
# scripts/device_bundle.sh builds here (that machine reaches no package registry):
#   bash scripts/gpu_check.sh            on the GPU machine (device run, carry [".device"])
#   bash scripts/gpu_check.sh --dry-run  here: checks the bundle, prints the plan, runs nothing
#   bash scripts/gpu_check.sh --plan     prints the plan only (needs no bundle)
# It installs the bundle into private folders (never into that machine's own Python or /), checks
# nvidia-smi and that SAPIEN renders on cuda:0 (NVIDIA's Vulkan driver alone is offered, so it
# cannot fall back to lavapipe), then times f1 collect, the tokenizer, teacher and student, and
# writes $OUT/gpu_check.md (a markdown table) and $OUT/gpu_check.log.
# Stages are not fatal: one that fails or runs out of time is a row saying so, and the rest go on.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=${F1_DEVICE_BUNDLE:-.device}
WORK=${GPU_CHECK_WORK:-/tmp/f1-gpu-check}
OUT=${OUT:-$WORK/out}
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}   # the whole run; each stage's timeout is cut to what is left
MESHES=(light full)
ENVS=(1 4 16)
STEPS=50          # actions per episode; an episode has 51 steps, two cameras each
TEACHER_STEPS=50
TOKENIZER_STEPS=50
# The wheels the run needs (the bundle may hold more); the names as wheel files spell them.
NEED_WHEELS=(sapien zarr numcodecs webdataset gymnasium google_crc32c donfig braceexpand farama_notifications
             transforms3d pyperclip imageio_ffmpeg)
NEED_DEBS=(libvulkan1 libglvnd0)
TRAIN_SETS=(--preset base --set training.mixed_precision=bf16)

mode=${1:-run}
case $mode in run|--dry-run|--plan) ;; *) echo "error: unknown option $mode; use --dry-run, --plan or nothing" >&2; exit 2 ;; esac

collect_cmd() {  # meshes M out
    echo f1 collect --gpus 1 --envs "$2" --episodes "$(( $2 > 1 ? $2 : 2 ))" --steps-per-episode $STEPS \
        --image-size 128 --out "$3" --set environment.robot_meshes="$1"
}

plan() {
    echo "gpu_check plan (budget ${BUDGET_S} s; outputs in \$OUT: gpu_check.md, gpu_check.log, render_cuda0.png):"
    echo "  1. install: pip --no-index --no-deps --target $WORK/site $BUNDLE/wheels/*.whl and this tree;"
    echo "     dpkg -x $BUNDLE/debs/*.deb into $WORK/prefix (only libraries the machine lacks go on LD_LIBRARY_PATH);"
    echo "     VK_ICD_FILENAMES = the NVIDIA driver's ICD; F1_ROBOT_ASSETS = $BUNDLE/robot_assets.tar.xz unpacked"
    echo "  2. nvidia-smi; SAPIEN RenderSystem('cuda:0'): device must be CUDA and not llvmpipe; one 128x128 frame"
    for meshes in "${MESHES[@]}"; do for m in "${ENVS[@]}"; do
        echo "  3. $(collect_cmd "$meshes" "$m" "$WORK/store-$meshes-$m")   -> steps/s, frames/s"
    done; done
    echo "  4. f1 train tokenizer --data $WORK/store-light-16 --max-steps $TOKENIZER_STEPS ${TRAIN_SETS[*]}"
    echo "  5. f1 train teacher --gpus 1 --data $WORK/store-light-16 --max-steps $TEACHER_STEPS ${TRAIN_SETS[*]}" \
         "-> steps/s, tokens/s, peak GPU memory, data-wait share"
    echo "  6. f1 train student --gpus 1 --total-iterations 2 --teacher-path <teacher>/checkpoint-$TEACHER_STEPS ${TRAIN_SETS[*]}"
}

check_bundle() {  # one line per problem; exit status 0 only when the bundle is whole
    python3 - "$BUNDLE" "${NEED_WHEELS[*]}" "${NEED_DEBS[*]}" <<'EOF'
import re, sys, tarfile, zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

bundle, need_wheels, need_debs = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
LIMIT = 60 * 2**20
problems = []
if not bundle.is_dir():
    sys.exit(f"error: no bundle at {bundle}; build it with `bash scripts/device_bundle.sh`")
wheels = sorted((bundle / "wheels").glob("*.whl"))
names = {}
for whl in wheels:
    parts = whl.name[:-4].split("-")  # name-version(-build)-python-abi-platform
    name, python, abi, platform = parts[0], parts[-3], parts[-2], parts[-1]
    names.setdefault(name.lower(), []).append(whl.name)
    if not ({"cp312", "py3", "py2.py3"} & set(python.split(".")) and abi in ("cp312", "abi3", "none")):
        problems.append(f"{whl.name} is not for CPython 3.12 ({python}-{abi})")
    if platform != "any" and not re.search(r"manylinux[0-9_]*x86_64", platform):
        problems.append(f"{whl.name} is not a manylinux x86_64 wheel ({platform})")
    try:
        with zipfile.ZipFile(whl) as z:
            if not any(n.endswith(".dist-info/RECORD") for n in z.namelist()):
                problems.append(f"{whl.name} has no RECORD")
    except zipfile.BadZipFile as exc:
        problems.append(f"{whl.name} is not a readable zip ({exc})")
for name in need_wheels:
    found = names.get(name.lower(), [])
    if len(found) != 1:
        problems.append(f"wheels/: {len(found)} wheels of {name} (need exactly one: pip refuses two)")
debs = sorted((bundle / "debs").glob("*.deb"))
for name in need_debs:
    if not any(d.name.startswith(name + "_") and d.name.endswith("_amd64.deb") for d in debs):
        problems.append(f"debs/: no amd64 {name}")
assets = bundle / "robot_assets.tar.xz"
meshes = []
if not assets.is_file():
    problems.append(f"{assets.name} is missing")
else:
    with tarfile.open(assets) as tar:
        members = set(tar.getnames())
        if "panda/panda_v2.urdf" not in members:
            problems.append(f"{assets.name} has no panda/panda_v2.urdf")
        else:
            root = ET.fromstring(tar.extractfile("panda/panda_v2.urdf").read())
            meshes = sorted({m.get("filename") for m in root.iter("mesh") if m.get("filename")})
            problems += [f"{assets.name} lacks panda/{m}" for m in meshes if f"panda/{m}" not in members]
size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
if size > LIMIT:
    problems.append(f"the bundle is {size / 2**20:.1f} MiB, over {LIMIT / 2**20:.0f} MiB")
for p in problems:
    print(f"bundle: {p}")
print(f"bundle {bundle}: {len(wheels)} wheels, {len(debs)} debs, Panda URDF + {len(meshes)} meshes; "
      f"{size / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}; {'OK' if not problems else f'{len(problems)} problem(s)'}")
sys.exit(1 if problems else 0)
EOF
}

if [[ $mode == --plan ]]; then plan; exit 0; fi
if [[ $mode == --dry-run ]]; then
    [[ -d $BUNDLE ]] || { echo "error: no bundle at $BUNDLE; build it with \`bash scripts/device_bundle.sh\`" >&2; exit 2; }
    check_bundle || exit 1
    plan
    echo "dry run: bundle checked, nothing run (the GPU steps need the lent machine)"
    exit 0
fi

# ============================================================ on the GPU machine
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); echo "[gpu_check] $1: $2 ($3)"; }
left() { echo $(( BUDGET_S - SECONDS )); }
cap() { local l; l=$(( $(left) - 15 )); (( l < $1 )) && echo $(( l > 5 ? l : 5 )) || echo "$1"; }
finish() {
    {
        echo "# f1 GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo
        echo "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
        echo
        echo "| stage | result | notes |"
        echo "| --- | --- | --- |"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "Total ${SECONDS} s of a ${BUDGET_S} s budget. Collect: 128x128, head + wrist cameras, $STEPS actions an"
        echo "episode, one GPU worker; frames/s counts both cameras. Teacher: base preset, bf16, tokens = target wrist"
        echo "tokens (batch x bptt x tokens per frame) per second; peak = torch.cuda.max_memory_allocated."
    } > "$OUT/gpu_check.md"
    cat "$OUT/gpu_check.md"
}
trap finish EXIT

check_bundle || { row bundle FAILED "see the lines above"; exit 1; }

# ---- 1. install, privately
SITE=$WORK/site; PREFIX=$WORK/prefix; GAPS=$PREFIX/gaps
rm -rf "$SITE" "$PREFIX"; mkdir -p "$SITE" "$PREFIX" "$GAPS"
t0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$BUNDLE"/wheels/*.whl &&
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" "$REPO" \
    || { row install FAILED "pip install into $SITE"; exit 1; }
for deb in "$BUNDLE"/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
# A carried library goes on the path only where the machine has none of that name: a Debian copy
# must never shadow that machine's own (newer) one. Sonames are the packages' symlinks (libX11.so.6).
for lib in "$PREFIX"/usr/lib/x86_64-linux-gnu/*.so.* "$PREFIX"/lib/x86_64-linux-gnu/*.so.*; do
    [[ -L $lib ]] || continue
    ldconfig -p | grep -q "^\s*$(basename "$lib") " || ln -sf "$lib" "$GAPS/"
done
nv_libs=$(ls -d /usr/local/nvidia/lib64 /usr/local/nvidia/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$GAPS:${nv_libs}${LD_LIBRARY_PATH:-}"
icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
      /etc/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -n 1)
egl=$(ls /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json /usr/share/glvnd/egl_vendor.d/10_nvidia.json \
      2>/dev/null | head -n 1)
[[ -n $icd ]] && export VK_ICD_FILENAMES=$icd VK_DRIVER_FILES=$icd  # NVIDIA's alone: no lavapipe to fall to
[[ -n $egl ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
mkdir -p "$WORK/assets" && tar -C "$WORK/assets" -xJf "$BUNDLE/robot_assets.tar.xz"
export F1_ROBOT_ASSETS=$WORK/assets/panda PYTHONPATH=$SITE PATH=$SITE/bin:$PATH PYTHONUNBUFFERED=1 COLUMNS=200
row install ok "$(( SECONDS - t0 )) s; $(ls "$GAPS" | wc -l) carried libraries used; ICD ${icd:-none found}"

# ---- 2. the GPU and SAPIEN on it
if nvidia-smi -L; then row nvidia-smi ok "$(nvidia-smi -L | head -n 1)"; else row nvidia-smi FAILED "no GPU"; fi
cd "$WORK"  # run f1 from outside the tree: its top-level folders are not the installed packages
probe=$(CUDA_VISIBLE_DEVICES=0 timeout "$(cap 90)" python3 - "$OUT/render_cuda0.png" <<'EOF'
import sys
import sapien
from PIL import Image
from f1.collect.randomization import sample_episode, sample_scene
from f1.collect.rendering import create_render_system
from f1.collect.scene import TabletopScene
from f1.shared.config import load_config

print(sapien.render.get_device_summary())
device = create_render_system("cuda:0").device
assert device.is_cuda() and "llvmpipe" not in device.name.lower(), ("not the GPU", device.name)
params = sample_scene(load_config().environment.domain_randomization, 3)
scene = TabletopScene(params, (128, 128), ("head", "wrist"), 0.01, robot_meshes="full", render_device="cuda:0")
scene.place(sample_episode(params, 0, 0.0))
scene.take_pictures()
frame = scene.read("head")
assert frame.std() > 5, "a blank frame"
Image.fromarray(frame).save(sys.argv[1])
print(f"GPU_CHECK device={device.name} cuda_id={device.cuda_id}")
EOF
)
echo "$probe"
if grep -q "GPU_CHECK device=" <<<"$probe"; then
    row "SAPIEN render" ok "$(grep -o 'GPU_CHECK device=.*' <<<"$probe" | cut -d' ' -f2-), 128x128 full meshes"
else
    row "SAPIEN render" FAILED "no frame on cuda:0 (see log)"
fi

# ---- 3. collect: steps/s from the store's manifest over the wall time, and the steady rate
# (steps over the time after the envs were built) from collect's own summary table.
for meshes in "${MESHES[@]}"; do for m in "${ENVS[@]}"; do
    store=$WORK/store-$meshes-$m; rm -rf "$store"
    t0=$(date +%s.%N)
    timeout "$(cap 60)" $(collect_cmd "$meshes" "$m" "$store") 2>&1 | tee "$WORK/collect-$meshes-$m.log" | tail -n 12
    rc=${PIPESTATUS[0]}
    wall=$(python3 -c "import time; print(time.time() - $t0)")
    result=$(python3 - "$store" "$wall" "$WORK/collect-$meshes-$m.log" <<'EOF'
import json, re, sys
from pathlib import Path
store, wall, log = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]).read_text()
shards = json.loads((store / "manifest.json").read_text())["shards"] if (store / "manifest.json").exists() else []
steps = sum(s.get("steps", s.get("num_steps", 0)) for s in shards)
steady = ""
row = re.search(r"^\W*0\W+(\d+)\W+(\d+)\W+([\d.]+)\W+([\d.]+)\W", log, re.M)  # worker 0: episodes steps wall setup
if row:
    n, wall0, setup = int(row[2]), float(row[3]), float(row[4])
    if wall0 > setup:
        steady = f"; steady {n / (wall0 - setup):.1f} steps/s, {2 * n / (wall0 - setup):.0f} frames/s (setup {setup:.1f} s)"
print(f"{steps / wall:.1f} steps/s, {2 * steps / wall:.0f} frames/s over {wall:.1f} s with start-up{steady}")
EOF
)
    [[ $rc == 0 ]] && row "collect $meshes M=$m" ok "$result" || row "collect $meshes M=$m" "FAILED rc=$rc" "$result"
done; done

# ---- 4-5. tokenizer, then the teacher in bf16, in this process so its peak GPU memory can be read
data=$WORK/store-light-16
t0=$SECONDS
timeout "$(cap 90)" f1 train tokenizer --data "$data" --output-dir "$WORK/tokenizer" --max-steps $TOKENIZER_STEPS \
    "${TRAIN_SETS[@]}" 2>&1 | tail -n 5
rc=${PIPESTATUS[0]}
row "tokenizer base $TOKENIZER_STEPS steps" "$([[ $rc == 0 ]] && echo ok || echo "FAILED rc=$rc")" "$(( SECONDS - t0 )) s"

teacher_sets=("${TRAIN_SETS[@]}" --set training.log_every=10 --set training.epochs=100 --set training.save_every=$TEACHER_STEPS)
timeout "$(cap 150)" python3 - train teacher --gpus 1 --data "$data" --tokenizer "$WORK/tokenizer" \
    --output-dir "$WORK/teacher" --max-steps $TEACHER_STEPS "${teacher_sets[@]}" <<'EOF' 2>&1 | tail -n 8
import sys, time
import torch
from f1.cli import main

start, code = time.perf_counter(), 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
print(f"GPU_CHECK teacher rc={code} wall_s={time.perf_counter() - start:.1f} peak_gib={peak:.2f}")
sys.exit(code)
EOF
rc=${PIPESTATUS[0]}
teacher=$(python3 - "$WORK/teacher" "$OUT/gpu_check.log" "${teacher_sets[@]}" <<'EOF'
import json, re, statistics, sys
from pathlib import Path
from f1.shared.config import load_config

out, log, sets = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), sys.argv[3:]
overrides = [sets[i + 1] for i in range(len(sets)) if sets[i] == "--set"] + ["model.preset=base"]
cfg = load_config(None, overrides)
tokens_per_step = cfg.training.batch_size * cfg.training.bptt_length * (cfg.model.tokenizer_image_size // cfg.model.tokenizer_downsample) ** 2
path = out / "episode_metrics.jsonl"
records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
later = records[1:] or records  # the first window holds the warm-up (CUDA kernels, caches)
sps = statistics.median(r["perf/steps_per_s"] for r in later) if later else 0.0
wait = statistics.mean(r["perf/data_wait_share"] for r in later) if later else float("nan")
peak = re.findall(r"GPU_CHECK teacher .*peak_gib=([\d.]+)", log)
print(f"{sps:.2f} steps/s, {sps * tokens_per_step:,.0f} tokens/s ({tokens_per_step} a step), "
      f"peak {peak[-1] if peak else '?'} GiB, data wait {wait:.1%} of step time; {len(records)} log windows")
EOF
)
row "teacher base bf16 $TEACHER_STEPS steps" "$([[ $rc == 0 ]] && echo ok || echo "FAILED rc=$rc")" "$teacher"

# ---- 6. the student, 2 PPO iterations on the teacher just trained
t0=$SECONDS
timeout "$(cap 120)" f1 train student --gpus 1 --teacher-path "$WORK/teacher/checkpoint-$TEACHER_STEPS" \
    --total-iterations 2 --steps-per-episode $STEPS --output-dir "$WORK/student" "${TRAIN_SETS[@]}" 2>&1 | tail -n 8
rc=${PIPESTATUS[0]}
last=$(tail -n 1 "$WORK/student/episode_metrics.jsonl" 2>/dev/null | python3 -c \
    "import json,sys; r=json.loads(sys.stdin.read() or '{}'); print(', '.join(f'{k} {v:.3g}' for k,v in r.items() if k.startswith('perf/')))" 2>/dev/null)
row "student 2 iterations" "$([[ $rc == 0 ]] && echo ok || echo "FAILED rc=$rc")" "$(( SECONDS - t0 )) s${last:+; $last}"
