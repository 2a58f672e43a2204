"""`ml-agent doctor`: what each backend needs and what this machine has. Never a secret value."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import NamedTuple

from ml_agent.backends.local import bwrap, envfiles, gpus
from ml_agent.contracts import ml_agent_home
from ml_agent.errors import MlAgentError

#: The Python the shipped configs ask for (image.python).
SHIPPED_PYTHON = "3.11"


class Check(NamedTuple):
    backend: str  # "local" | "modal"
    what: str
    ok: bool
    detail: str
    required: bool = True


def local_checks(environ: dict[str, str] | None = None) -> list[Check]:
    env = dict(os.environ if environ is None else environ)
    home = ml_agent_home()
    checks = []
    try:
        choice = bwrap.choose()
        detail = "; ".join([f"{choice.bwrap.describe()} is used", *(
            f"not {reason}" for reason in choice.skipped)])
        checks.append(Check("local", "bubblewrap", True, detail))
        checks.append(Check("local", "user namespaces", True, "a test sandbox started"))
        checks.append(Check(
            "local", "writable virtualenv (overlay)", choice.overlay,
            "the sandbox's venv is writable (changes discarded)" if choice.overlay
            else choice.warning() or "", required=False,
        ))
    except MlAgentError as exc:
        checks.append(Check("local", "bubblewrap", False, str(exc)))
    py = platform.python_version()
    checks.append(Check(
        "local", "python", py.startswith(SHIPPED_PYTHON + "."),
        f"{py}; the shipped configs want image.python {SHIPPED_PYTHON} "
        "(the sandbox runs the host's Python)",
    ))
    missing = [p for p in ("git", "curl") if shutil.which(p) is None]
    checks.append(Check(
        "local", "apt packages (git, curl)", not missing,
        "present" if not missing else f"missing: sudo apt-get install -y {' '.join(missing)}",
    ))
    key_file = envfiles.secret_path(home, "anthropic-secret")
    has_env = bool(env.get("ANTHROPIC_API_KEY"))
    has_file = key_file.is_file()
    detail = " and ".join(
        x for x in (("ANTHROPIC_API_KEY is set" if has_env else ""),
                    (f"{key_file} exists" if has_file else "")) if x
    ) or f"export ANTHROPIC_API_KEY=... or put ANTHROPIC_API_KEY=... in {key_file}"
    checks.append(Check("local", "Anthropic key (for the proxy)", has_env or has_file, detail))
    loose = envfiles.permission_warnings(home)
    checks.append(Check("local", "secret file permissions", not loose,
                        "; ".join(loose) or "private (only you can read them)", required=False))
    checks.append(gpu_check(home))
    envs = len([p for p in (home / "envs").glob("[!.]*") if p.is_dir()])
    checks.append(Check("local", "ML_AGENT_HOME", True, f"{home} ({envs} cached images)",
                        required=False))
    return checks


def gpu_check(home: Path) -> Check:
    """The GPUs and who holds each (a run's lease: `ml_agent.backends.local.gpus`)."""
    found = gpus.inventory()
    if not found:
        where = gpus.root() / gpus.GPUS_DIR
        return Check("local", "NVIDIA GPU", False,
                     f"none in {where} (CPU configs only, e.g. configs/local.yaml)",
                     required=False)
    held = gpus.holders(home)
    rows = [f"{g.index} {g.model} (" + (f"held by run {', '.join(held[g.key])}"
                                         if g.key in held else "free") + ")" for g in found]
    files = len(gpus.device_files())
    return Check("local", "NVIDIA GPU", True,
                 f"{len(found)} GPU{'s' if len(found) > 1 else ''}: {'; '.join(rows)}; "
                 f"{files} device files", required=False)


def modal_checks(environ: dict[str, str] | None = None) -> list[Check]:
    env = dict(os.environ if environ is None else environ)
    checks = []
    try:
        from importlib.metadata import version

        checks.append(Check("modal", "modal client", True, version("modal")))
    except Exception as exc:  # noqa: BLE001 - report, don't crash the doctor
        checks.append(Check("modal", "modal client", False, f"not installed ({exc})"))
    config = Path(env.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        checks.append(Check("modal", "Modal token", True, "MODAL_TOKEN_ID/SECRET are set"))
    elif config.is_file():
        checks.append(Check("modal", "Modal token", True, f"{config} exists"))
    else:
        checks.append(Check("modal", "Modal token", False,
                            "none: run `modal setup` (or set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET)"))
    checks.append(Check(
        "modal", "Modal secrets", True,
        "checked at `up`; create them with `modal secret create anthropic-secret "
        "ANTHROPIC_API_KEY=...` (and `hf-write HF_TOKEN=...` for the syncer)",
        required=False,
    ))
    return checks
