"""Secrets for the local backend: `$ML_AGENT_HOME/secrets/<name>.env` (KEY=VALUE lines).

The local stand-in for a Modal secret. The secrets folder is never bound into a sandbox;
the supervisor reads the proxy's and the syncer's, the launcher reads `sandbox.secrets`.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path

from ml_agent.errors import SandboxError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secrets_dir(home: Path) -> Path:
    return home / "secrets"


def secret_path(home: Path, name: str) -> Path:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name) or ".." in name:
        raise SandboxError(f"secret name {name!r} is not a plain name (letters, digits, . _ -)")
    return secrets_dir(home) / f"{name}.env"


def parse_env(text: str, source: str = "<env>") -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments skipped; `export ` and quotes allowed."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            # Never echo the line: it may hold a secret value.
            raise SandboxError(f"{source}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def read_secret(home: Path, name: str) -> dict[str, str]:
    """The secret's variables; a clear error naming the file when it is missing."""
    path = secret_path(home, name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SandboxError(
            f"secret {name!r} not found: create {path} with KEY=VALUE lines "
            f"(e.g. `mkdir -p {path.parent} && install -m 600 /dev/null {path}`, then edit it)"
        ) from None
    return parse_env(text, str(path))


def permission_warnings(home: Path) -> list[str]:
    """Like ssh: each secret file (and the folder) other users can read or change, with the
    fix. `up` and `doctor` print them; nothing is refused."""
    folder = secrets_dir(home)
    warnings = []
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
        files = sorted(p for p in folder.iterdir() if p.name.endswith(".env"))
    except OSError:
        return []
    if mode & 0o022:
        warnings.append(f"{folder} can be written by {_who(mode, 0o020, 0o002)} (mode "
                        f"{mode:04o}): they could replace a key; run `chmod 700 {folder}`")
    for path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            warnings.append(f"{path} holds secrets and is accessible by "
                            f"{_who(mode, 0o070, 0o007)} (mode {mode:04o}); run "
                            f"`chmod 600 {path}`")
    return warnings


def _who(mode: int, group: int, others: int) -> str:
    return " and ".join(w for w, bits in (("its group", group), ("other users", others))
                        if mode & bits)


def has_secret(home: Path, name: str) -> bool:
    return secret_path(home, name).is_file()


def syncer_token(home: Path, secret: str | None) -> tuple[str | None, str]:
    """The syncer's HF token, or None and why the syncer is skipped (said by `up` on the
    console and by the supervisor in its log)."""
    if not secret or not has_secret(home, secret):
        where = secret_path(home, secret) if secret else "a secret"
        return None, f"syncer skipped: no HF token ({where} with HF_TOKEN=...)"
    token = read_secret(home, secret).get("HF_TOKEN")
    if not token:
        return None, f"syncer skipped: {secret_path(home, secret)} has no HF_TOKEN"
    return token, ""


ANTHROPIC_UPSTREAM = "https://api.anthropic.com"


def proxy_key(
    home: Path, secret: str | None, upstream: str, environ: Mapping[str, str]
) -> str:
    """The key the local proxy sends upstream: the secret file's ANTHROPIC_API_KEY, else
    (for api.anthropic.com only) the host's ANTHROPIC_API_KEY. Never printed."""
    if secret and has_secret(home, secret):
        key = read_secret(home, secret).get("ANTHROPIC_API_KEY", "")
        if not key:
            raise SandboxError(f"{secret_path(home, secret)} has no ANTHROPIC_API_KEY=... line")
        return key
    if upstream.rstrip("/") == ANTHROPIC_UPSTREAM and environ.get("ANTHROPIC_API_KEY"):
        return environ["ANTHROPIC_API_KEY"]
    where = f"{secret_path(home, secret)} (a line ANTHROPIC_API_KEY=sk-ant-...)" if secret else ""
    if upstream.rstrip("/") == ANTHROPIC_UPSTREAM:
        raise SandboxError(
            "no Anthropic API key for the local proxy: export ANTHROPIC_API_KEY"
            + (f", or put it in {where}" if where else "")
        )
    raise SandboxError(
        f"no key for the proxy's upstream {upstream}: put it in {where or 'proxy.upstream_secret'}"
        " (the host's ANTHROPIC_API_KEY is sent only to api.anthropic.com)"
    )
