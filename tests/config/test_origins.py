"""Local paths (`src:`) resolve against the file that wrote them, across `extends:` folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel

from ml_agent.config import check, load_config
from ml_agent.config.loader import load_source
from ml_agent.config.models import LaunchConfig
from ml_agent.config.origins import ANY, LEAF, anchor, local_paths
from ml_agent.config.types import LocalPath, LocalRef
from ml_agent.contracts import CONFIGS_DIR

REPO = CONFIGS_DIR.parent

# A complete config but for its layers; `{layers}` is filled in per test.
BASE = """\
app: origins
backend: local
image:
  layers:
{layers}
volumes:
  data: {{name: origins-data, mount: /data}}
proxy: {{enabled: false}}
"""


@pytest.fixture(autouse=True)
def _project(tmp_path: Path) -> None:
    """Each test's folders are one project (a git checkout): they may name each other's
    files. (Outside a project, extends and src stay in the config's folder: test_trust.)"""
    (tmp_path / ".git").mkdir()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def touch(path: Path) -> Path:
    return write(path, "# a local file a layer adds\n")


def srcs(config: LaunchConfig) -> list[str]:
    """The resolved src of every file and dir layer, in order."""
    kinds = ("file", "dir")
    return [getattr(x, k).src for x in config.image.layers for k in kinds if hasattr(x, k)]


def test_an_extends_chain_across_folders_resolves_each_src_in_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = "    - file: {src: tools/agent.py, dest: /agent/agent.py}\n"
    write(tmp_path / "c" / "base.yaml", BASE.format(layers=layers))
    agent = touch(tmp_path / "c" / "tools" / "agent.py")
    write(tmp_path / "b" / "mid.yaml", "extends: ../c/base.yaml\nsandbox: {gpu: T4}\n")
    top = write(tmp_path / "a" / "top.yaml", "extends: ../b/mid.yaml\n")
    monkeypatch.chdir(tmp_path / "b")  # neither the top file's folder nor the base's
    assert srcs(load_config(top)) == [str(agent)]
    assert srcs(load_config(os.path.relpath(top))) == [str(agent)]


def test_a_src_written_in_the_middle_file_is_relative_to_the_middle_file(tmp_path: Path) -> None:
    layers = "    - file: {src: tools/agent.py, dest: /agent/agent.py}\n"
    write(tmp_path / "c" / "base.yaml", BASE.format(layers=layers))
    write(
        tmp_path / "b" / "mid.yaml",
        "extends: ../c/base.yaml\nimage:\n  layers:\n"  # lists replace: mid owns them all
        "    - dir: {src: skills, dest: /app/skills}\n"
        "    - file: {src: ../c/tools/agent.py, dest: /agent/agent.py}\n",
    )
    (tmp_path / "b" / "skills").mkdir()
    agent = touch(tmp_path / "c" / "tools" / "agent.py")
    top = write(tmp_path / "a" / "top.yaml", "extends: ../b/mid.yaml\n")
    assert srcs(load_config(top)) == [str(tmp_path / "b" / "skills"), str(agent)]


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_config_elsewhere_can_extend_a_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    target = CONFIGS_DIR / "a10.yaml"
    name = str(target) if how == "absolute" else os.path.relpath(target, tmp_path)
    write(tmp_path / "mine.yaml", f"extends: {name}\nagent: {{max_turns: 5}}\n")
    monkeypatch.chdir(tmp_path)
    config, diags = check("mine.yaml")
    assert diags == []
    assert config is not None
    assert str(REPO / "agent" / "agent.py") in srcs(config)
    assert str(REPO / ".claude") in srcs(config)
    assert config.agent.max_turns == 5


def test_a_missing_src_in_an_inherited_file_is_reported_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = (
        "    - pip: [trackio]\n"
        "    - file: {src: tools/missing.py, dest: /agent/agent.py}\n"
    )
    write(tmp_path / "shared" / "base.yaml", BASE.format(layers=layers))
    touch(tmp_path / "project" / "tools" / "missing.py")  # beside the top file: not it
    write(tmp_path / "project" / "top.yaml", "extends: ../shared/base.yaml\n")
    monkeypatch.chdir(tmp_path)
    _, diags = check("project/top.yaml")
    assert [str(d) for d in diags] == [
        "shared/base.yaml:6:19: image.layers[1].file.src: no such file: 'tools/missing.py' "
        f"(resolved to '{tmp_path}/shared/tools/missing.py'; src is relative to the folder "
        "of the YAML file that sets it)"
    ]


def test_a_src_given_with_set_is_relative_to_the_top_config(tmp_path: Path) -> None:
    layers = "    - file: {src: tools/agent.py, dest: /agent/agent.py}\n"
    write(tmp_path / "c" / "base.yaml", BASE.format(layers=layers))
    touch(tmp_path / "c" / "tools" / "agent.py")
    mine = touch(tmp_path / "a" / "mine.py")
    top = write(tmp_path / "a" / "top.yaml", "extends: ../c/base.yaml\n")
    config = load_config(top, ["image.layers.0.file.src=mine.py"])
    assert srcs(config) == [str(mine)]


def test_a_src_taken_from_a_reference_is_relative_to_the_file_of_the_reference(
    tmp_path: Path,
) -> None:
    layers = "    - file: {src: '${agent.system_prompt_append}', dest: /agent/agent.py}\n"
    write(tmp_path / "c" / "base.yaml", BASE.format(layers=layers))
    touch(tmp_path / "c" / "agent.py")
    top = write(
        tmp_path / "a" / "top.yaml", "extends: ../c/base.yaml\nagent:\n  system_prompt_append: x\n"
    )
    # the string is written in c/base.yaml (as a reference), whatever it refers to
    _, diags = check(top)
    assert [(d.file, d.key) for d in diags] == [
        (str(tmp_path / "c" / "base.yaml"), "image.layers[0].file.src")
    ]
    assert f"resolved to '{tmp_path}/c/x'" in diags[0].message


def test_local_path_fields_are_found_by_schema() -> None:
    layer = {"file": {"src": LEAF}, "dir": {"src": LEAF}}
    assert local_paths(LaunchConfig) == {"image": {"layers": {ANY: layer}}}

    class Item(BaseModel):
        path: Annotated[str, LocalPath(want_dir=False)]
        name: str = ""

    class Outer(BaseModel):
        by_key: dict[str, Item] = {}
        maybe: Item | None = None
        many: list[Annotated[str, LocalPath(want_dir=True)]] = []
        plain: list[str] = []

    assert local_paths(Outer) == {
        "by_key": {ANY: {"path": LEAF}},
        "maybe": {"path": LEAF},
        "many": {ANY: LEAF},
    }


def test_anchor_wraps_only_local_paths_and_leaves_the_source_data_alone(tmp_path: Path) -> None:
    layers = (
        "    - run: [echo tools/agent.py]\n"
        "    - file: {src: tools/agent.py, dest: /agent/agent.py}\n"
    )
    top = write(tmp_path / "top.yaml", BASE.format(layers=layers))
    source = load_source(top, env={})
    data = anchor(source.data, LaunchConfig, source.folder_of)
    run, file = data["image"]["layers"]
    assert run == {"run": ["echo tools/agent.py"]}
    assert isinstance(file["file"]["src"], LocalRef)
    assert (file["file"]["src"].text, file["file"]["src"].base) == ("tools/agent.py", str(tmp_path))
    assert source.data["image"]["layers"][1]["file"]["src"] == "tools/agent.py"
    assert data["volumes"] is source.data["volumes"]  # untouched parts are shared, not copied


def test_a_plain_model_validate_resolves_against_the_context_base_dir(tmp_path: Path) -> None:
    agent = touch(tmp_path / "agent.py")
    data = {
        "app": "x",
        "backend": "local",
        "image": {"layers": [{"file": {"src": "agent.py", "dest": "/agent/agent.py"}}]},
        "volumes": {"data": {"name": "d", "mount": "/data"}},
        "proxy": {"enabled": False},
    }
    config = LaunchConfig.model_validate(data, context={"base_dir": tmp_path})
    assert srcs(config) == [str(agent)]
