"""Local volumes: `$ML_AGENT_HOME/volumes/<volume name>/`, bound at their mount paths."""

from __future__ import annotations

import re
from pathlib import Path

from ml_agent.errors import SandboxError
from ml_agent.plan import Plan, VolumePlan

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def volume_path(home: Path, name: str) -> Path:
    """The host folder of a volume; the name can never climb out of `volumes/`."""
    if not _NAME.match(name) or ".." in name:
        raise SandboxError(f"volume name {name!r} is not a plain name (letters, digits, . _ -)")
    return home / "volumes" / name


def ensure_volume(home: Path, vol: VolumePlan) -> Path:
    path = volume_path(home, vol.name)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise SandboxError(f"volume {vol.name!r}: {path} is not a folder")
    if not path.is_dir():
        if not vol.create_if_missing:
            raise SandboxError(
                f"volume {vol.name!r} does not exist ({path}); create it with "
                f"`mkdir -p {path}` or set volumes.{vol.key}.create_if_missing: true"
            )
        path.mkdir(parents=True)
    return path


def ensure_volumes(plan: Plan, home: Path) -> dict[str, str]:
    """Volume key -> host folder, creating those the config allows."""
    return {vol.key: str(ensure_volume(home, vol)) for vol in plan.volumes}
