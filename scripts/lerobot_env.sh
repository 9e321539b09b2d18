#!/usr/bin/env bash
# Builds .venv-lerobot: LeRobot 0.4.4's dataset reader in an environment of its own, for the test
# (tests/test_lerobot.py) that LeRobot reads what `f1 dataset convert --format lerobot` writes.
#
# Its own environment because lerobot 0.4.4 pins datasets < 5 and huggingface-hub < 0.36, which clash
# with f1's. lerobot goes in without its dependencies (they include robot SDKs, wandb, rerun, a
# torch < 2.11); what its dataset module imports goes in with pinned versions. torch is not
# installed a second time: a .pth file puts f1's site-packages after the env's own, so the env
# imports its own datasets/huggingface-hub/av and f1's torch (about 1 min and 1 GB saved).
# torchvision and torchcodec are the releases for f1's torch; torchcodec (a CPU build on PyPI)
# decodes through the system's FFmpeg libraries (scripts/install_system_deps.sh installs Debian's
# ffmpeg). PyPI's torchvision is a CUDA build whose compiled ops do not load beside a CPU torch;
# LeRobot's reader uses none of them (tests/lerobot_reader_check.py says how it still imports).
#
#   bash scripts/lerobot_env.sh [F1_VENV=.venv] [LEROBOT_VENV=.venv-lerobot]
# Idempotent: a finished env has .lerobot-installed and is left alone.
set -euo pipefail
F1_VENV=${1:-.venv}
ENV=${2:-.venv-lerobot}
STAMP="$ENV/.lerobot-installed"
[ -f "$STAMP" ] && exit 0

torch_version=$("$F1_VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
minor=$(echo "$torch_version" | cut -d. -f2)
# torchvision 0.(minor + 15) and torchcodec 0.minor are the releases built against torch 2.minor.
torchvision="torchvision==0.$((minor + 15)).*"
torchcodec="torchcodec==0.${minor}.*"

rm -rf "$ENV"
python3 -m venv "$ENV"
pip=("$ENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" "pandas" "pyarrow" "jsonlines>=4,<5" \
  "deepdiff>=7.0.1,<9" "draccus==0.10.0" "einops>=0.8,<0.9" "termcolor>=2.4,<4" "packaging" "pillow" "safetensors" "psutil" "pyyaml"
"${pip[@]}" --no-deps "lerobot==0.4.4" "accelerate>=1.10,<2" "$torchvision" "$torchcodec"
f1_site=$("$F1_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
env_site=$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$f1_site" > "$env_site/zz-f1-torch.pth"  # last on sys.path: only what the env lacks (torch) comes from f1
"$ENV/bin/python" "$(dirname "$0")/../tests/lerobot_reader_check.py" --imports  # LeRobot's reader imports here
touch "$STAMP"
echo "[f1] built $ENV: lerobot 0.4.4 with torch $torch_version from $F1_VENV"
