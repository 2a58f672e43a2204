"""The local image: Python/apt/run-layer checks and the cached, relocated virtualenv."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from ml_agent.backends.local import image
from ml_agent.backends.local.sandbox import VENV_DEST, build_argv, sandbox_env, start
from ml_agent.errors import SandboxError
from ml_agent.plan import AptLayer, PipLayer, Plan, RunLayer
from tests.local.helpers import layout, local_plan


def _with_layers(plan: Plan, *layers: object, python: str | None = None) -> Plan:
    update: dict[str, object] = {"layers": tuple(layers)}
    if python:
        update["python"] = python
    return plan.model_copy(update={"image": plan.image.model_copy(update=update)})


def _wheel(folder: Path, name: str = "mla_demo") -> Path:
    """A tiny pure-Python wheel with a console script, built by hand (no network)."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "def main():\n    print('demo ok')\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{dist}/entry_points.txt": f"[console_scripts]\nmla-demo = {name}:main\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, text in files.items():
            zf.writestr(arcname, text)
        zf.writestr(f"{dist}/RECORD", "".join(f"{a},,\n" for a in files) + f"{dist}/RECORD,,\n")
    return path


def test_host_python_must_match():
    image.check_python(_with_layers(local_plan(), python=image.host_python()[:4]))
    with pytest.raises(SandboxError, match=r"image.python is '3.9' but this machine's Python is"):
        image.check_python(_with_layers(local_plan(), python="3.9"))


def test_missing_apt_package_names_the_install_command():
    image.check_apt(_with_layers(local_plan(), AptLayer(packages=("coreutils",))))
    plan = _with_layers(local_plan(), AptLayer(packages=("git", "no-such-package-mla")))
    with pytest.raises(SandboxError, match=r"sudo apt-get install -y no-such-package-mla$"):
        image.check_apt(plan)


def test_run_layers_are_refused_with_the_way_out():
    plan = _with_layers(local_plan(), RunLayer(commands=("echo hi",)))
    with pytest.raises(SandboxError, match="run layers are not supported.*--backend modal"):
        image.check_run_layers(plan)


def test_env_hash_follows_the_pip_layers_only():
    plan = local_plan()
    assert image.env_hash(plan) == image.env_hash(local_plan("sandbox.timeout=2h"))
    other = _with_layers(plan, PipLayer(packages=("trackio==0.43.0",)))
    assert image.env_hash(other) != image.env_hash(plan)


def test_venv_is_built_once_relocated_and_reused(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path)
    plan = _with_layers(local_plan(), PipLayer(packages=(str(wheel),)))
    key = image.env_hash(plan)
    envs = tmp_path / "home" / "envs"
    # Leftovers of a killed build: an unmarked folder and a temp folder.
    (envs / key / "bin").mkdir(parents=True)
    (envs / f".build-{key}-dead").mkdir()
    lines: list[str] = []
    venv = image.ensure_venv(plan, tmp_path / "home", lines.append)
    assert venv == envs / key and (venv / image.COMPLETE_FILE).is_file()
    assert not (envs / f".build-{key}-dead").exists()
    assert any("pip install" in line for line in lines)
    script = (venv / "bin" / "mla-demo").read_text()
    assert script.startswith(f"#!{VENV_DEST}/bin/python")
    assert "mla-demo==1.0" in image.venv_info(venv)["pip_freeze"] or any(
        p.startswith("mla") for p in image.venv_info(venv)["pip_freeze"]
    )
    marker = (venv / image.COMPLETE_FILE).stat().st_mtime_ns
    assert image.ensure_venv(plan, tmp_path / "home", lines.append) == venv
    assert (venv / image.COMPLETE_FILE).stat().st_mtime_ns == marker  # reused, not rebuilt

    # Inside the sandbox the console script runs from the venv's in-sandbox path.
    host = layout(plan, tmp_path, venv)
    argv = build_argv(plan, host, ["mla-demo"])
    with start(argv, sandbox_env(plan, {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, b"demo ok\n"), err


def test_a_failing_pip_layer_names_the_layer_and_leaves_nothing(tmp_path):
    plan = _with_layers(local_plan(), PipLayer(packages=(str(tmp_path / "missing.whl"),)))
    with pytest.raises(SandboxError, match=r"building the local image failed at pip layer"):
        image.ensure_venv(plan, tmp_path)
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []
