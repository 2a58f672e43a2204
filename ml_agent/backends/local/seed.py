"""Seed a new virtualenv from this machine's installed distributions (an offline cache).

The shipped configs pin claude-agent-sdk and trackio at the versions ml-agent itself
depends on, so the host already has them and their dependencies installed, compiled
bytecode included. Copying those files (per each distribution's RECORD) into the new venv
replaces minutes of download, unpacking and compiling by seconds of copying. Only what the
requirements need is copied (their dependency closure, markers evaluated), and only
distributions whose installed version satisfies the requirement; `pip install` runs
afterwards anyway and has the final word: it finds the seeded ones satisfied and fetches
whatever is missing or pinned differently.
"""

from __future__ import annotations

import configparser
import importlib.metadata as metadata
import json
import os
import shutil
import site
import sys
from collections.abc import Iterable
from pathlib import Path

SCRIPT = """#!{python}
import sys
from {module} import {attr_head}
if __name__ == "__main__":
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    sys.exit({attr}())
"""


def _site_dirs() -> list[Path]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(d).resolve() for d in dirs if Path(d).is_dir()]


def installed() -> dict[str, metadata.Distribution]:
    """Distributions installed in this interpreter's site-packages (not editable ones)."""
    from packaging.utils import canonicalize_name

    roots = set(_site_dirs())
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        base = Path(str(dist.locate_file(""))).resolve()
        name = dist.metadata["Name"]
        if not name or base not in roots or _editable(dist):
            continue
        found.setdefault(canonicalize_name(name), dist)  # first on sys.path wins, like import
    return found


def _editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable"))
    except ValueError:
        return True


def closure(
    requirements: Iterable[str], available: dict[str, metadata.Distribution]
) -> list[metadata.Distribution]:
    """The installed distributions that satisfy `requirements` and their dependencies.

    A requirement that is not installed at a satisfying version (or is a path or URL) is
    left to pip, together with everything below it.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    chosen: dict[str, metadata.Distribution] = {}
    extras_done: dict[str, set[str]] = {}
    todo: list[Requirement] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:  # a path, URL or option: pip's business
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        dist = available.get(name)
        if req.url or dist is None or not req.specifier.contains(dist.version, prereleases=True):
            continue
        wanted = set(req.extras)
        if name in chosen and wanted <= extras_done[name]:
            continue
        chosen[name] = dist
        extras_done[name] = extras_done.get(name, set()) | wanted
        for line in dist.requires or []:
            dep = Requirement(line)
            contexts = [{"extra": e} for e in ("", *sorted(extras_done[name]))]
            if dep.marker is None or any(dep.marker.evaluate(c) for c in contexts):
                todo.append(dep)
    return sorted(chosen.values(), key=lambda d: d.metadata["Name"].lower())


def copy_into(venv: Path, dists: Iterable[metadata.Distribution]) -> int:
    """Copy each distribution's site-packages files into the venv; returns the file count.

    Files outside site-packages (scripts, data) are not copied: console scripts are written
    from entry points instead, for the venv's own interpreter.
    """
    target = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = target / "site-packages"
    count = 0
    for dist in dists:
        for rel in dist.files or []:
            if rel.parts and rel.parts[0] == "..":
                continue
            src = Path(str(dist.locate_file(rel)))
            if not src.is_file() or src.is_symlink():
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)  # keeps mtimes: the copied bytecode stays valid
            count += 1
        _console_scripts(venv, dist)
    return count


def _console_scripts(venv: Path, dist: metadata.Distribution) -> None:
    text = dist.read_text("entry_points.txt")
    if not text:
        return
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return
    if not parser.has_section("console_scripts"):
        return
    python = venv / "bin" / "python"
    for name, value in parser.items("console_scripts"):
        module, _, attr = value.partition(":")
        attr = attr.split("[")[0].strip()
        if not attr or "/" in name:
            continue
        path = venv / "bin" / name
        path.write_text(SCRIPT.format(python=python, module=module.strip(),
                                      attr_head=attr.split(".")[0], attr=attr))
        os.chmod(path, 0o755)
