"""Where the Panda model lives: the URDF and meshes shipped in the mani-skill wheel.

mani-skill is installed only for these files. Importing it would pull in torch,
its own SAPIEN set-up and a registry of environments, so the package is located
with `importlib.util.find_spec` (which reads the import machinery, not the
package) and the files are read as plain files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from f1.shared.errors import UserError

PANDA_URDF_RELATIVE = Path("assets/robots/panda/panda_v2.urdf")
PANDA_FIX = "reinstall it with `pip install 'mani-skill>=3.0.1,<3.1'` (f1 reads its Panda URDF and meshes)"


class PandaAssetsMissing(UserError):
    """The Panda URDF or its meshes cannot be found."""


def panda_urdf_path() -> Path:
    """The absolute path of panda_v2.urdf; its meshes sit beside it under franka_description/."""
    spec = importlib.util.find_spec("mani_skill")
    if spec is None or spec.origin is None:
        raise PandaAssetsMissing(f"the mani-skill package is not installed; {PANDA_FIX}")
    urdf = Path(spec.origin).parent / PANDA_URDF_RELATIVE
    if not urdf.is_file():
        raise PandaAssetsMissing(f"{urdf} is missing from the mani-skill install; {PANDA_FIX}")
    meshes = urdf.parent / "franka_description" / "meshes"
    if not (meshes / "collision").is_dir() or not (meshes / "visual").is_dir():
        raise PandaAssetsMissing(f"the Panda meshes under {meshes} are missing; {PANDA_FIX}")
    return urdf
