"""constraints/ci.txt (the pinned CI environment) stays in step with pyproject and configs.

CI installs with `-c constraints/ci.txt`, so the suite tests what it was written against;
`constraints/refresh` regenerates the file. The agent's image pins (configs) are the
versions CI tests the host side against.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ml_agent.config import load_config
from ml_agent.contracts import CONFIGS_DIR
from ml_agent.plan import PipLayer, build_plan

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints" / "ci.txt"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints/ci.txt:{number}: not `name==version`: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints/ci.txt:{number}: {name} pinned twice"
        pins[name] = match[2]
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"],
                                     *project["optional-dependencies"]["dev"]]]


@pytest.mark.parametrize("req", _requirements(), ids=str)
def test_every_dependency_is_pinned_inside_its_range(req: Requirement) -> None:
    if req.marker is not None and not req.marker.evaluate():
        pytest.skip(f"not for this platform: {req.marker}")
    pins = _pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in constraints/ci.txt: run constraints/refresh"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"constraints/ci.txt pins {req.name}=={pins[name]}, outside pyproject's "
        f"'{req.specifier}': run constraints/refresh"
    )


@pytest.mark.parametrize("config", sorted(CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_the_configs_image_pins_are_the_ci_versions(config: Path) -> None:
    plan = build_plan(load_config(config), config)
    pins = _pins()
    checked = 0
    for layer in plan.image.layers:
        if not isinstance(layer, PipLayer):
            continue
        for package in layer.packages:
            name, _, version = package.partition("==")
            if canonicalize_name(name) in ("claude-agent-sdk", "trackio"):
                assert version == pins[canonicalize_name(name)], (
                    f"{config.name} pins {package}; constraints/ci.txt has "
                    f"{pins[canonicalize_name(name)]}: pin one version in both"
                )
                checked += 1
    if config.name == "base.yaml":
        assert checked == 2
