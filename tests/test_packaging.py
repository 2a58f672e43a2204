"""Packaging: a built wheel (not the editable checkout) carries agent/, .claude/, configs/.

Builds a wheel of a copy of the working tree offline (`pip wheel --no-build-isolation`),
installs it with `pip install --target`, and runs `python -m ml_agent` from outside the
repo against that install only. Also: the sdist carries the same files (`python -m build`
goes sdist -> wheel), and the checkout keeps using its own files (editable installs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ml_agent import contracts

REPO = Path(__file__).resolve().parent.parent
#: What a build needs from the working tree (the rest: tests, bench, caches, .git).
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "ml_agent",
    "agent",
    ".claude",
    "configs",
    "schema",
)
BUNDLE = "ml_agent/_bundle"
#: Bundled repo folders; everything in them but byte code and per-user settings ships.
BUNDLED_DIRS = ("agent", ".claude", "configs", "schema")
MUST_SHIP = ("agent/agent.py", "agent/protocol.py", ".claude/CLAUDE.md", "configs/local.yaml")


def _bdist_wheel_available() -> bool:
    # setuptools >= 70.1 has bdist_wheel itself; older ones need the `wheel` package.
    import setuptools

    version = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


_offline_build = pytest.mark.skipif(
    not _bdist_wheel_available(),
    reason="building a wheel offline needs setuptools>=70.1 or `wheel` (the dev extra)",
)


def builds(test):
    """A test that builds and installs a wheel (~10-20 s in all, shared per module)."""
    return pytest.mark.slow(_offline_build(test))


def _shipped_from_checkout() -> dict[str, bytes]:
    """The checkout's files that belong in the bundle, by repo-relative path."""
    files = {}
    for folder in BUNDLED_DIRS:
        for path in (REPO / folder).rglob("*"):
            rel = path.relative_to(REPO)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            if path.name == "settings.local.json":
                continue
            files[rel.as_posix()] = path.read_bytes()
    return files


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, f"{argv} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _pip(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return _run([sys.executable, "-m", "pip", *args], cwd, env)


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the working tree's build inputs, with byte code next to the bundled sources
    (it must stay out of the wheel)."""
    src = tmp_path_factory.mktemp("packaging") / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(".mypy_cache"))
        else:
            shutil.copy2(path, src / name)
    for folder in ("agent", ".claude/scripts"):
        pycache = src / folder / "__pycache__"
        pycache.mkdir(exist_ok=True)
        (pycache / "stale.cpython-311.pyc").write_bytes(b"not shipped")
    return src


@pytest.fixture(scope="module")
def wheel(src: Path) -> Path:
    dist = src.parent / "dist"
    _pip("wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), cwd=src)
    (built,) = dist.glob("ml_agent-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path) -> Path:
    site = wheel.parent.parent / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=wheel.parent)
    return site


def _ml_agent(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ml_agent ARGS` importing only the installed wheel, from outside the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_AGENT", "PYTHON"))}
    env.update(PYTHONPATH=str(site), ML_AGENT_HOME=str(site.parent / "home"))
    return subprocess.run(
        [sys.executable, *args],
        cwd=site.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _bundle_names(names: list[str]) -> dict[str, str]:
    """Archive member names under the bundle, keyed by their repo-relative path."""
    return {n.split(f"{BUNDLE}/", 1)[1]: n for n in names if f"{BUNDLE}/" in n}


@builds
def test_wheel_bundles_the_repo_files_and_no_byte_code(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        bundled = _bundle_names(names)
        expected = _shipped_from_checkout()
        assert set(bundled) == set(expected)
        for rel, data in expected.items():
            assert zf.read(bundled[rel]) == data, rel
    assert set(MUST_SHIP) <= set(bundled)
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert "ml_agent/__main__.py" in names


@builds
def test_sdist_carries_the_bundled_files_and_builds_the_same_wheel(src: Path, wheel: Path):
    out = src.parent / "sdist"
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    name = _run([sys.executable, "-c", code, str(out)], src).strip().splitlines()[-1]
    with tarfile.open(out / name) as tf:
        members = [m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()]
    assert set(_shipped_from_checkout()) <= set(members)
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]
    assert not [m for m in members if m.startswith(f"{BUNDLE}/")]

    dist = src.parent / "dist-from-sdist"
    _pip(
        "wheel",
        str(out / name),
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(dist),
        cwd=src.parent,
    )
    (from_sdist,) = dist.glob("ml_agent-*.whl")
    with zipfile.ZipFile(from_sdist) as a, zipfile.ZipFile(wheel) as b:
        assert _bundle_names(a.namelist()).keys() == _bundle_names(b.namelist()).keys()


@builds
def test_installed_wheel_loads_the_protocol_from_its_bundle(site: Path):
    code = (
        "import json, ml_agent, ml_agent.contracts as c;"
        "print(json.dumps({'pkg': ml_agent.__file__, 'root': str(c.ROOT),"
        " 'protocol': c.protocol.__file__, 'statuses': list(c.protocol.STATUSES),"
        " 'dirs': [str(d) for d in (c.AGENT_DIR, c.CLAUDE_DIR, c.CONFIGS_DIR)]}))"
    )
    proc = _ml_agent(site, "-c", code)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    bundle = (site / BUNDLE).resolve()
    assert Path(info["pkg"]).resolve().is_relative_to(site.resolve())  # not the checkout
    assert Path(info["root"]) == bundle
    assert Path(info["protocol"]) == bundle / "agent" / "protocol.py"
    assert info["statuses"] == list(contracts.protocol.STATUSES)
    assert [Path(d) for d in info["dirs"]] == [
        bundle / "agent",
        bundle / ".claude",
        bundle / "configs",
    ]


@builds
def test_installed_wheel_validates_its_shipped_configs(site: Path):
    configs = site / BUNDLE / "configs"
    proc = _ml_agent(site, "-m", "ml_agent", "validate", str(configs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(list(configs.glob('*.yaml')))} files valid" in proc.stdout + proc.stderr


@builds
def test_installed_wheel_plans_local_yaml_from_its_bundle(site: Path):
    bundle = (site / BUNDLE).resolve()
    proc = _ml_agent(site, "-m", "ml_agent", "plan", str(bundle / "configs/local.yaml"), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    layers = [layer for layer in plan["image"]["layers"] if layer["kind"] in ("file", "dir")]
    assert {layer["dest"] for layer in layers} >= {
        "/agent/agent.py",
        "/agent/protocol.py",
        "/app/.claude",
    }
    for layer in layers:
        src = Path(layer["src"])
        assert src.is_relative_to(bundle), src
        assert src.is_file() if layer["kind"] == "file" else src.is_dir(), src


def test_checkout_uses_its_own_files():
    """Editable installs (and running from the checkout) read agent/ etc. in place."""
    if not (REPO / "agent" / "protocol.py").is_file() or (REPO / BUNDLE).exists():
        pytest.skip("not running from a checkout")
    assert contracts.ROOT == REPO
    assert Path(contracts.protocol.__file__) == REPO / "agent" / "protocol.py"
