"""scripts/gpu_check.sh on a CPU machine: the plan, the bundle check (--dry-run), and the wheel slimming.

The GPU stages themselves run only on a lent GPU machine; these tests keep the
script's CPU side honest so that the one short device run does not fail on a
typo. Tests that read the bundle skip when .device/ is not built
(`bash scripts/device_bundle.sh` builds it).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
BUNDLE = REPO / ".device"
needs_bundle = pytest.mark.skipif(not (BUNDLE / "wheels").is_dir(), reason=".device/ not built (scripts/device_bundle.sh)")


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_plan_needs_no_bundle_and_names_every_stage(tmp_path):
    result = gpu_check("--plan", F1_DEVICE_BUNDLE=str(tmp_path / "none"))
    assert result.returncode == 0, result.stderr
    for m in (1, 4, 16):
        for meshes in ("light", "full"):
            assert f"--envs {m} " in result.stdout and f"robot_meshes={meshes}" in result.stdout
    for stage in ("train tokenizer", "train teacher --gpus 1", "mixed_precision=bf16", "train student --gpus 1"):
        assert stage in result.stdout, stage


@pytest.mark.parametrize("args, env, expected", [
    (("--bogus",), {}, "unknown option --bogus"),
    (("--dry-run",), {"F1_DEVICE_BUNDLE": "/nonexistent/bundle"}, "device_bundle.sh"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args, env, expected):
    result = gpu_check(*args, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


@needs_bundle
def test_dry_run_passes_on_the_built_bundle():
    result = gpu_check("--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout.splitlines()[0] and "dry run: bundle checked" in result.stdout


@needs_bundle
def test_dry_run_names_what_a_bundle_lacks(tmp_path):
    # The real bundle's files by link, less sapien's wheel and one deb.
    for sub in ("wheels", "debs"):
        (tmp_path / sub).mkdir()
        for f in (BUNDLE / sub).iterdir():
            if not f.name.startswith(("sapien-", "libvulkan1_")):
                (tmp_path / sub / f.name).symlink_to(f)
    (tmp_path / "robot_assets.tar.xz").symlink_to(BUNDLE / "robot_assets.tar.xz")
    result = gpu_check("--dry-run", F1_DEVICE_BUNDLE=str(tmp_path))
    assert result.returncode == 1
    assert "0 wheels of sapien" in result.stdout and "no amd64 libvulkan1" in result.stdout, result.stdout


def test_slim_wheel_drops_files_and_their_record_rows_and_keeps_the_rest_byte_for_byte(tmp_path):
    src, dst = tmp_path / "pkg-1.0-py3-none-any.whl", tmp_path / "out" / "pkg-1.0-py3-none-any.whl"
    files = {"pkg/__init__.py": b"x = 1\n", "pkg/big/blob.bin": os.urandom(4096), "pkg/lib.so": b"\x7fELF" * 100}
    record = "".join(f"{name},sha256=abc,{len(data)}\n" for name, data in files.items()) + "pkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("pkg-1.0.dist-info/RECORD", record)
    dst.parent.mkdir()
    subprocess.run([sys.executable, str(REPO / "scripts" / "slim_wheel.py"), str(src), str(dst), "--drop", "pkg/big/*"],
                   check=True, capture_output=True)  # fmt: skip
    with zipfile.ZipFile(dst) as z:
        assert sorted(z.namelist()) == ["pkg-1.0.dist-info/RECORD", "pkg/__init__.py", "pkg/lib.so"]
        assert all(info.compress_type == zipfile.ZIP_LZMA for info in z.infolist())
        assert z.read("pkg/lib.so") == files["pkg/lib.so"] and z.read("pkg/__init__.py") == files["pkg/__init__.py"]
        rows = [row[0] for row in csv.reader(io.StringIO(z.read("pkg-1.0.dist-info/RECORD").decode())) if row]
    assert rows == ["pkg/__init__.py", "pkg/lib.so", "pkg-1.0.dist-info/RECORD"]
