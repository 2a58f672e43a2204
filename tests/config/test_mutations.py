"""Mutated shipped configs never produce a traceback: only diagnostics (hypothesis)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_agent.config import check
from ml_agent.config.loader import load_source
from ml_agent.config.messages import Diagnostic
from ml_agent.contracts import CONFIGS_DIR

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TRICKY_TEXT = [
    "", " ", "${", "${}", "${env:NOPE}", "${env:NOPE:-x}", "${sandbox}", "${app}", "$${x}",
    "A10", "a10:4", "H100!:9", "B200+", "A11", "1h", "-5s", "25h", "0", "16GiB", "-1GiB",
    "/", "/root", "/tmp", "/data/../x", "data", "../agent/agent.py", "/nope/nowhere", "~",
    "https://example.com", "anthropic-secret", "x" * 300, "é", "\t", "3.10", "null", "true",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TRICKY_TEXT),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "name", "mount", "gpu", "src", "pip"]) | st.text(
            max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository, so `src: ../agent/...` still resolves."""
    root = tmp_path_factory.mktemp("mutations")
    (root / "configs").mkdir()
    repo = CONFIGS_DIR.parent
    for name in ("agent", ".claude"):
        (root / name).symlink_to(repo / name)
    for path in SHIPPED:
        shutil.copy(path, root / "configs" / path.name)
    return root / "configs"


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, path + (i,))
    return out


def _mutate(data: dict, draw: Any) -> dict:
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "insert", "replace", "replace"]))
        if not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(VALUES)
        elif isinstance(parent, dict):
            key = draw(st.sampled_from([f"{path[-1]}s", str(path[-1]).upper(), "extra"]))
            parent[key] = draw(VALUES)
        else:
            parent.insert(path[-1], draw(VALUES))
    return data


def _assert_only_diagnostics(path: Path) -> None:
    config, diags = check(path, env={})
    assert all(isinstance(d, Diagnostic) for d in diags)
    assert (config is None) == bool(diags)
    for d in diags:
        assert str(d).startswith(d.file)
        assert d.line >= 0 and d.col >= 0


@pytest.mark.parametrize("config", [p.name for p in SHIPPED])
def test_shipped_configs_are_valid(config: str) -> None:
    _, diags = check(CONFIGS_DIR / config, env={})
    assert diags == []


@SETTINGS
@given(data=st.data())
def test_mutated_values_give_diagnostics_not_tracebacks(workdir: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([p.name for p in SHIPPED]))
    merged = load_source(workdir / name, env={}).data
    mutated = _mutate(merged, data.draw)
    target = workdir / f"mutated-{name}"
    target.write_text(yaml.safe_dump(mutated, allow_unicode=True), encoding="utf-8")
    _assert_only_diagnostics(target)


@SETTINGS
@given(data=st.data())
def test_mutated_text_gives_diagnostics_not_tracebacks(workdir: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([p.name for p in SHIPPED]))
    text = (workdir / name).read_bytes()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            junk = data.draw(
                st.sampled_from([b":", b"-", b"[", b"{", b"}", b"&a", b"*a", b"!!python/none ",
                                 b"\n  ", b"\t", b"'", b'"', b"\xff", b"\x00", b"${", b"<<: "])
                | st.binary(max_size=4)
            )
            text = text[:at] + junk + text[at:]
        else:
            text = text[:at] + text[at + data.draw(st.integers(1, 20)) :]
    target = workdir / f"mutated-text-{name}"
    target.write_bytes(text)
    _assert_only_diagnostics(target)
