"""Where the Panda model lives: a folder of its URDF and meshes, by default the mani-skill wheel's.

The folder is, first found: the config key `environment.robot_assets_dir`, the
environment variable F1_ROBOT_ASSETS, or mani-skill's `assets/robots/panda`.
The override exists for machines that cannot install mani-skill (the GPU
machine of scripts/device_bundle.sh: its wheel is ~100 MB); such a folder is a
copy of mani-skill's, laid out the same way: `panda_v2.urdf` beside
`franka_description/meshes/{collision,visual}/`.

mani-skill is installed only for these files. Importing it would pull in torch,
its own SAPIEN set-up and a registry of environments, so the package is located
with `importlib.util.find_spec` (which reads the import machinery, not the
package) and the files are read as plain files. This module imports no SAPIEN:
the collect parent calls `panda_urdf_path` to check the folder before any
worker starts, so a bad folder is one line there rather than a traceback from
every worker.
"""

from __future__ import annotations

import importlib.util
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Optional

from f1.shared.errors import UserError

ASSETS_ENV = "F1_ROBOT_ASSETS"
CONFIG_KEY = "environment.robot_assets_dir"
PANDA_URDF_NAME = "panda_v2.urdf"
MANISKILL_PANDA_DIR = Path("assets/robots/panda")  # inside the mani_skill package
PANDA_URDF_RELATIVE = MANISKILL_PANDA_DIR / PANDA_URDF_NAME
PANDA_FIX = "reinstall it with `pip install 'mani-skill>=3.0.1,<3.1'` (f1 reads its Panda URDF and meshes)"
FOLDER_FIX = (
    f"point it at a copy of mani-skill's {MANISKILL_PANDA_DIR} ({PANDA_URDF_NAME} and franka_description/; "
    "scripts/device_bundle.sh makes one), or unset it to use the installed mani-skill"
)


class PandaAssetsMissing(UserError):
    """The Panda URDF or its meshes cannot be found."""


def robot_assets_dir(configured: Optional[str] = None, environ: Mapping[str, str] = os.environ) -> tuple[Optional[Path], str]:
    """The override folder and what named it (the config key or the variable), or (None, "mani-skill")."""
    if configured:
        return Path(configured).expanduser(), CONFIG_KEY
    if environ.get(ASSETS_ENV):
        return Path(environ[ASSETS_ENV]).expanduser(), ASSETS_ENV
    return None, "mani-skill"


def referenced_meshes(urdf: Path) -> list[str]:
    """The mesh files `urdf` names, relative to its folder, in the order it names them (no repeats)."""
    try:
        root = ET.parse(urdf).getroot()
    except ET.ParseError as exc:
        raise PandaAssetsMissing(f"{urdf} is not a readable URDF ({exc})") from None
    names = [mesh.get("filename", "") for mesh in root.iter("mesh")]
    return list(dict.fromkeys(name for name in names if name))


def panda_urdf_path(assets_dir: Optional[str] = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The absolute path of panda_v2.urdf, checked to have every mesh it names beside it.

    `assets_dir` is `environment.robot_assets_dir` (None: not set).
    """
    folder, source = robot_assets_dir(assets_dir, environ)
    if folder is None:
        spec = importlib.util.find_spec("mani_skill")
        if spec is None or spec.origin is None:
            raise PandaAssetsMissing(
                f"no Panda assets: mani-skill is not installed and neither {CONFIG_KEY} nor {ASSETS_ENV} is set; "
                f"set one to a copy of mani-skill's {MANISKILL_PANDA_DIR} (scripts/device_bundle.sh makes one), or {PANDA_FIX}"
            )
        folder, fix = Path(spec.origin).parent / MANISKILL_PANDA_DIR, PANDA_FIX
        where = "the mani-skill install"
    else:
        fix = f"{source}={folder}: {FOLDER_FIX}"
        where = f"the robot assets folder {folder} (from {source})"
        if not folder.is_dir():
            raise PandaAssetsMissing(f"{where} does not exist; {FOLDER_FIX}")
    urdf = (folder / PANDA_URDF_NAME).resolve()
    if not urdf.is_file():
        raise PandaAssetsMissing(f"{PANDA_URDF_NAME} is missing from {where}; {fix}")
    missing = [name for name in referenced_meshes(urdf) if not (urdf.parent / name).is_file()]
    if missing:
        raise PandaAssetsMissing(
            f"{where} is incomplete: {len(missing)} mesh file(s) that {PANDA_URDF_NAME} names are missing "
            f"(first: {missing[0]}); {fix}"
        )
    return urdf
