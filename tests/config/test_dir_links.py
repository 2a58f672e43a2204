"""Symlinks inside a `dir:` layer stay in the project tree (or an allowed folder).

Modal's `add_local_dir` uploads what a symlinked file points to (modal/mount.py
`_MountDir.get_files_to_upload` resolves each file), so `.claude/x -> ~/.ssh/id_rsa` in a
pull request would put the key into the image. validate, plan and up refuse such a layer
(the local backend binds the folder, where a link resolves within the sandbox's own view;
the rule is the config's, the same for both backends).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_agent.cli import main
from ml_agent.config import check

SECRET = "ssh-private-key-content-0123456789"
CONFIG = """\
app: ok
backend: local
image:
  python: '3.11'
  layers:
    - dir: {src: ../.claude, dest: /app/.claude}
volumes: {data: {name: d, mount: /data}}
proxy: {enabled: false}
"""


@pytest.fixture(autouse=True)
def _no_allowed_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_AGENT_ALLOW_OUTSIDE", raising=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose .claude folder a config adds as a `dir:` layer; a key outside it."""
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)
    (root / ".claude" / "skills").mkdir(parents=True)
    (root / ".claude" / "CLAUDE.md").write_text("# instructions\n")
    (root / "configs").mkdir()
    (root / "configs" / "c.yaml").write_text(CONFIG)
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "id_rsa").write_text(SECRET)
    return root


def problems(config: Path, allow: list[str] | None = None) -> list[str]:
    return [str(d) for d in check(config, env={}, allow=allow)[1]]


@pytest.mark.parametrize("link", ["x", "skills/deep/x"])
def test_a_link_leading_outside_the_project_is_refused_at_the_layer(project, tmp_path, link):
    where = project / ".claude" / link
    where.parent.mkdir(parents=True, exist_ok=True)
    where.symlink_to(tmp_path / "home" / ".ssh" / "id_rsa")
    (got,) = problems(project / "configs" / "c.yaml")
    assert got.startswith(f"{project}/configs/c.yaml:6:18: image.layers[0].dir.src: "
                          "'../.claude' holds symlinks leading outside the project tree "
                          f"{project} ('{link}')")
    assert "--allow-outside" in got
    assert SECRET not in got and ".ssh" not in got  # the target is not quoted


def test_a_linked_folder_leading_outside_is_refused_too(project, tmp_path):
    (project / ".claude" / "keys").symlink_to(tmp_path / "home" / ".ssh")
    (got,) = problems(project / "configs" / "c.yaml")
    assert "('keys')" in got


def test_links_inside_the_project_or_an_allowed_folder_are_fine(project, tmp_path):
    (project / "README.md").write_text("readme\n")
    (project / ".claude" / "readme").symlink_to(project / "README.md")
    (project / ".claude" / "rel").symlink_to(os.path.join("..", "README.md"))
    assert problems(project / "configs" / "c.yaml") == []
    (project / ".claude" / "key").symlink_to(tmp_path / "home" / ".ssh" / "id_rsa")
    assert problems(project / "configs" / "c.yaml", allow=[str(tmp_path / "home")]) == []


@pytest.mark.parametrize("command", ["plan", "up"])
def test_plan_and_up_refuse_the_layer(project, tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path / "ml-agent-home"))
    monkeypatch.setenv("COLUMNS", "400")
    (project / ".claude" / "x").symlink_to(tmp_path / "home" / ".ssh" / "id_rsa")
    args = [command, str(project / "configs" / "c.yaml"), *(["--detach"] if command == "up"
                                                             else [])]
    assert main(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "holds symlinks leading outside the project tree" in err and SECRET not in err
    assert not (tmp_path / "ml-agent-home" / "runs").exists()  # nothing was launched
