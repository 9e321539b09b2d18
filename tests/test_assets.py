"""The Panda assets folder override (environment.robot_assets_dir, F1_ROBOT_ASSETS), as the GPU bundle uses it.

A copy of only the files f1 reads (the URDF and the meshes it names) must
build and render the same scene as mani-skill's own folder; a missing or
incomplete folder is one line and exit 2 from `f1 collect`, before any worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from f1.collect.assets import ASSETS_ENV, PandaAssetsMissing, panda_urdf_path, referenced_meshes
from conftest import run_f1


def copy_panda(dst: Path) -> Path:
    """dst holding panda_v2.urdf and the meshes it names, copied from the installed mani-skill."""
    src = panda_urdf_path(environ={})
    for name in [src.name, *referenced_meshes(src)]:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src.parent / name, dst / name)
    return dst


def test_lookup_order_is_config_key_then_variable_then_mani_skill(tmp_path):
    folder = copy_panda(tmp_path / "panda")
    maniskill = panda_urdf_path(environ={})
    assert "mani_skill" in maniskill.parts
    assert panda_urdf_path(str(folder), environ={}) == (folder / "panda_v2.urdf").resolve()
    assert panda_urdf_path(environ={ASSETS_ENV: str(folder)}) == (folder / "panda_v2.urdf").resolve()
    assert panda_urdf_path(str(folder), environ={ASSETS_ENV: "/nowhere"}).parent == folder.resolve()
    assert panda_urdf_path(None, environ={ASSETS_ENV: ""}) == maniskill  # empty is unset


@pytest.mark.parametrize("breakage", ["no folder", "no urdf", "a mesh missing", "not xml"])
def test_a_bad_folder_is_one_line_naming_the_fix(tmp_path, breakage):
    folder = copy_panda(tmp_path / "panda")
    if breakage == "no folder":
        shutil.rmtree(folder)
    elif breakage == "no urdf":
        (folder / "panda_v2.urdf").unlink()
    elif breakage == "a mesh missing":
        (folder / "franka_description/meshes/visual/link3.glb").unlink()
    else:
        (folder / "panda_v2.urdf").write_text("<robot")
    with pytest.raises(PandaAssetsMissing) as info:
        panda_urdf_path(str(folder), environ={})
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    if breakage == "a mesh missing":
        assert "link3.glb" in message and "incomplete" in message


@pytest.mark.slow
def test_a_copied_folder_builds_and_renders_the_same_scene(tmp_path):
    from f1.collect.randomization import sample_episode, sample_scene
    from f1.collect.scene import TabletopScene
    from f1.shared.config import load_config

    folder = copy_panda(tmp_path / "panda")
    params = sample_scene(load_config().environment.domain_randomization, 3)
    for meshes in ("light", "full"):
        frames = []
        for assets_dir in (None, str(folder)):
            scene = TabletopScene(params, (32, 32), ("head",), 0.01, robot_meshes=meshes, robot_assets_dir=assets_dir)
            scene.place(sample_episode(params, 0, 0.0))
            scene.take_pictures()
            frames.append(scene.read("head"))
        assert frames[0].reshape(-1, 3).std(axis=0).max() > 10, meshes  # a real picture, not a blank
        assert np.array_equal(frames[0], frames[1]), f"{meshes} meshes render differently from the copy"


@pytest.mark.parametrize("how", ["variable", "config key"])
def test_collect_refuses_a_bad_folder_in_one_line_with_exit_2(tmp_path, how):
    folder = copy_panda(tmp_path / "panda")
    (folder / "franka_description/meshes/collision/link0.stl").unlink()
    out = tmp_path / "store"
    args = ["collect", "--out", out, "--episodes", "1", "--gpus", "0", "--workers", "1"]
    env = {ASSETS_ENV: str(folder)} if how == "variable" else {}
    if how == "config key":
        args += ["--set", f"environment.robot_assets_dir={folder}"]
    result = run_f1(*args, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "link0.stl" in lines[0], result.stderr
    assert not out.exists()  # refused before any store or worker
