"""The project tree: the only folders whose files a config may name (`extends:`, `src:`).

Configs may be untrusted (a pull request that CI validates), so a config cannot make
ml-agent read, print or bind a host file outside its own project: the nearest folder above
the config that holds `.git`, else the config's own folder. Paths are checked after every
symlink is resolved. The files ml-agent ships (configs/, agent/, .claude/) are admitted
too, so that a config can extend a shipped one. `--allow-outside PATH` (or
ML_AGENT_ALLOW_OUTSIDE, paths separated by os.pathsep) admits more folders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

FLAG = "--allow-outside"
ENV = "ML_AGENT_ALLOW_OUTSIDE"
FLAG_HELP = (
    "Let `extends:` and `src:` name files in PATH, outside the project tree (the folder "
    f"above the config holding .git). Repeatable; also ${ENV} (paths separated by "
    f"'{os.pathsep}'). Off by default: CI can validate untrusted configs."
)

_folders: dict[str, tuple[int, int, str]] = {}  # folder as written -> (dev, inode, real path)


def realpath(path: str | os.PathLike[str], _hops: int = 0) -> str:
    """os.path.realpath, with each folder's real path worked out once (configs come in
    folders; realpath costs a stat per component). The folder is taken as written, never
    normalised first: `link/..` is the parent of the link's target, as the OS opens it.
    Its identity is checked on every use, so a symlink pointed elsewhere since is noticed;
    a final component that is a symlink is followed (through the same cache)."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    folder, name = os.path.split(path)
    if name in ("", ".", "..") or _hops > 32:  # 32: deeper is a loop, let the OS say so
        return os.path.realpath(path)
    try:
        st = os.stat(folder)
    except OSError:
        return os.path.realpath(path)
    known = _folders.get(folder)
    if known is None or known[:2] != (st.st_dev, st.st_ino):
        known = (st.st_dev, st.st_ino, os.path.realpath(folder))
        if len(_folders) < 256:
            _folders[folder] = known
    real = os.path.join(known[2], name)
    try:
        target = os.readlink(real)
    except OSError:  # not a link (or not there): it is what it is
        return real
    return realpath(os.path.join(known[2], target), _hops + 1)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_roots: dict[str, str] = {}  # a config's folder (absolute, as named) -> its project tree


def project_root(folder: str) -> str:
    """The project tree (a real path) of a config in `folder`: see the module docstring.

    The walk up is over the folder as named, not its target: a symlinked folder inside a
    project (`configs/shared -> ~/secrets`) stays in that project, so the files it leads
    to are outside. Worked out once per folder and process (validate reads folders of
    configs); a found tree is checked to still hold its .git on every use.
    """
    root = _roots.get(folder)
    if root is not None and (root == folder or os.path.lexists(os.path.join(root, ".git"))):
        return realpath(root)
    here = folder
    while not os.path.lexists(os.path.join(here, ".git")):
        parent = os.path.dirname(here)
        if parent == here:
            here = folder
            break
        here = parent
    if len(_roots) < 256:
        _roots[folder] = here
    return realpath(here)


_shipped: list[str] = []
_links: dict[tuple[str, str, tuple[str, ...], int], list[str]] = {}  # Tree.links_out's


def shipped() -> list[str]:
    """The folders of the files ml-agent ships: configs a project may extend, and the
    agent files those configs add to the image (never the rest of an ml-agent checkout)."""
    if not _shipped:
        from ml_agent.contracts import AGENT_DIR, CLAUDE_DIR, CONFIGS_DIR  # stdlib only

        _shipped.extend(os.path.realpath(p) for p in (CONFIGS_DIR, AGENT_DIR, CLAUDE_DIR))
    return _shipped


class Tree:
    """The folders a config may name files in: its project tree and the allowed ones."""

    def __init__(self, root: str, allowed: Iterable[str] = ()) -> None:
        self.root = root
        self.allowed = tuple(allowed)

    @classmethod
    def of(cls, config: str | os.PathLike[str], allow: Iterable[str] | None = None) -> Tree:
        """The tree of the config file `config`, found from the folder it is in as named (a
        config that is a symlink, or in a symlinked folder, does not bring its target's
        folder in). `allow`: the folders given with --allow-outside, besides those in
        ML_AGENT_ALLOW_OUTSIDE."""
        paths = [*(allow or ()), *os.environ.get(ENV, "").split(os.pathsep)]
        root = project_root(os.path.dirname(os.path.abspath(config)))
        return cls(root, [os.path.realpath(os.path.expanduser(p)) for p in paths if p])

    def inside(self, real: str) -> bool:
        """`real` (a resolved path) is in the project tree itself or shipped with ml-agent
        (what a message may quote)."""
        return _inside(real, self.root) or any(_inside(real, s) for s in shipped())

    def admits(self, real: str) -> bool:
        """`real` (a resolved path) is in the project tree, shipped, or allowed."""
        return self.inside(real) or any(_inside(real, a) for a in self.allowed)

    def links_out(self, folder: str, limit: int = 3) -> list[str]:
        """Symlinks inside `folder` (a `dir:` layer's resolved src; walked without following
        any) whose target is not admitted, as paths relative to it (at most `limit`).

        Modal's `add_local_dir` uploads what a symlinked file points to (modal/mount.py
        `_MountDir.get_files_to_upload` resolves every file), so `.claude/x ->
        ~/.ssh/id_rsa` would copy the key into the image. A scandir walk: no stat but for
        the links themselves, once per folder and process (validate reads many configs
        that add the same folder).
        """
        key = (folder, self.root, self.allowed, limit)
        if key not in _links:
            if len(_links) >= 256:
                _links.clear()
            _links[key] = self._links_out(folder, limit)
        return list(_links[key])

    def _links_out(self, folder: str, limit: int) -> list[str]:
        found: list[str] = []
        stack = [folder]
        while stack and len(found) < limit:
            here = stack.pop()
            try:
                entries = sorted(os.scandir(here), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_symlink():
                    if not self.admits(realpath(entry.path)):
                        found.append(os.path.relpath(entry.path, folder))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
        return found[:limit]

    def link_refusal(self, what: str, links: list[str]) -> str:
        """The message for a `dir:` layer `what` holding symlinks (`links_out`) that lead
        outside the tree (their targets are not quoted)."""
        shown = ", ".join(repr(link) for link in links)
        return (
            f"{what} holds symlinks leading outside the project tree {self.root} ({shown}): "
            "their targets would be copied into the sandbox; remove them, or allow the "
            f"folder they lead to with {FLAG} PATH or {ENV}"
        )

    def refusal(self, what: str) -> str:
        """The message for a path that is not admitted; `what` names it as written."""
        return (
            f"{what} is outside the project tree {self.root} (the nearest folder above the "
            "config holding .git; symlinks resolved): configs name only files inside it; "
            f"to allow a folder, pass {FLAG} PATH or set {ENV}"
        )
