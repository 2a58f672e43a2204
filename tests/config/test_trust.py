"""Untrusted configs: the project tree rule and values shown by where they came from.

The CLI side (every --format of validate, plan in text and JSON) is in tests/cli; here the
rule's edges: which folder is the tree, symlinks and `..`, the shipped configs, and how a
value from the environment is shown in a message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_agent.config import check, load_config
from ml_agent.config.redact import Redactor
from ml_agent.config.tree import Tree, project_root, realpath
from ml_agent.contracts import CONFIGS_DIR
from tests.config.hostile import DECOY_ENV, ENV_NAME, GOOD, Hostile, leaked


@pytest.fixture(autouse=True)
def _no_allowed_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_AGENT_ALLOW_OUTSIDE", raising=False)


def messages(path: str | Path, *overrides: str, env: dict[str, str] | None = None) -> list[str]:
    _, diags = check(path, overrides, env={} if env is None else env)
    return [str(d) for d in diags]


def test_the_tree_is_the_nearest_folder_holding_git_else_the_configs_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    (tmp_path / "repo" / ".git").write_text("gitdir: /elsewhere\n")  # a worktree: a file
    assert project_root(str(tmp_path / "repo" / "a" / "b")) == str(tmp_path / "repo")
    (tmp_path / "loose").mkdir()
    assert project_root(str(tmp_path / "loose")) == str(tmp_path / "loose")


def test_realpath_resolves_a_links_dotdot_as_the_os_does(tmp_path: Path) -> None:
    (tmp_path / "far" / "deep").mkdir(parents=True)
    (tmp_path / "near").mkdir()
    (tmp_path / "near" / "link").symlink_to(tmp_path / "far" / "deep")
    # lexically near/x.yaml; opened, it is far/x.yaml
    assert realpath(tmp_path / "near" / "link" / ".." / "x.yaml") == str(
        tmp_path / "far" / "x.yaml"
    )


@pytest.mark.parametrize("git", [False, True])
def test_without_git_a_config_cannot_extend_a_file_in_the_folder_above(
    tmp_path: Path, git: bool
) -> None:
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "top.yaml").write_text("extends: ../base.yaml\n")
    if git:  # both are one project
        (tmp_path / ".git").mkdir()
        assert messages(tmp_path / "sub" / "top.yaml") == []
        return
    (got,) = messages(tmp_path / "sub" / "top.yaml")
    assert (
        f"sub/top.yaml:1:10: extends: '../base.yaml' is outside the project tree {tmp_path}/sub"
        in got
    )


def test_an_outside_path_is_refused_before_it_is_looked_at(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: /nonexistent/x.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: /etc/hostname\n")
    # the same answer whether the file exists or not: no probing of the host's files
    (a,) = check(tmp_path / "a.yaml", env={})[1]
    (b,) = check(tmp_path / "b.yaml", env={})[1]
    assert a.message.replace("/nonexistent/x.yaml", "X") == b.message.replace("/etc/hostname", "X")


def test_shipped_configs_can_be_extended_from_anywhere(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(f"extends: {CONFIGS_DIR / 'local.yaml'}\n")
    assert messages(tmp_path / "mine.yaml") == []


def test_a_src_given_on_the_command_line_is_the_operators_choice(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(GOOD)
    assert messages(tmp_path / "c.yaml", "image.layers=[{dir: {src: /etc, dest: /e}}]") == []
    layers = "image: {python: '3.11', layers: [{dir: {src: /etc, dest: /e}}]}"
    (tmp_path / "d.yaml").write_text(GOOD.replace("image: {python: '3.11'}", layers))
    (got,) = messages(tmp_path / "d.yaml")
    assert "'/etc' is outside the project tree" in got


def test_allowed_folders_come_from_the_argument_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = Tree.of(tmp_path / "c.yaml", ["~"])
    assert tree.admits(os.path.realpath(os.path.expanduser("~/x")))
    assert not tree.admits("/etc/passwd")
    monkeypatch.setenv("ML_AGENT_ALLOW_OUTSIDE", "/etc")
    assert Tree.of(tmp_path / "c.yaml").admits("/etc/passwd")


# -- values from the environment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu", "shown"),
    [
        (f"${{env:{ENV_NAME}}}", f"unknown GPU '${{env:{ENV_NAME}}}'"),  # the whole value
        (f"x${{env:{ENV_NAME}}}", f"unknown GPU 'x${{env:{ENV_NAME}}}'"),  # inside text
    ],
)
def test_an_env_value_in_an_error_is_shown_by_name(tmp_path: Path, gpu: str, shown: str) -> None:
    (tmp_path / "c.yaml").write_text(GOOD + f"sandbox: {{gpu: '{gpu}'}}\n")
    (got,) = messages(tmp_path / "c.yaml", env={ENV_NAME: DECOY_ENV})
    assert shown in got and not leaked(got)


def test_a_short_env_value_is_not_quoted_at_its_key_and_no_hint_derived_from_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text(GOOD + "sandbox: {gpu: '${env:G}'}\n")
    (got,) = messages(tmp_path / "c.yaml", env={"G": "a11"})
    assert "unknown GPU '${env:G}'" in got
    assert "did you mean" not in got and "A11" not in got and "A10" not in got


def test_an_env_value_reached_through_set_and_references_stays_hidden(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(GOOD + "agent: {model: '${sandbox.workdir}'}\n")
    env = {ENV_NAME: DECOY_ENV}
    got = messages(tmp_path / "c.yaml", f"sandbox.workdir=rel/${{env:{ENV_NAME}}}", env=env)
    assert got and not leaked("\n".join(got))
    assert any(f"'rel/${{env:{ENV_NAME}}}'" in m for m in got)


def test_the_config_itself_keeps_the_real_values(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(GOOD + f"sandbox: {{env: {{K: '${{env:{ENV_NAME}}}'}}}}\n")
    config = load_config(tmp_path / "c.yaml", env={ENV_NAME: DECOY_ENV})
    assert config.sandbox.env == {"K": DECOY_ENV}


def test_a_value_taken_from_an_allowed_outside_file_is_shown_by_reference(tmp_path: Path) -> None:
    world = Hostile.build(tmp_path)
    _, diags = check(
        world.project / "configs" / "creds_value.yaml", env={}, allow=[str(world.secrets)]
    )
    text = "\n".join(map(str, diags))
    assert "unknown GPU '${token}'" in text and not leaked(text)


def test_the_redactor_is_case_insensitive_and_leaves_short_values_in_prose() -> None:
    r = Redactor({"sEcReT-value": "${env:S}", "no": "${env:N}"})
    assert r.text("got 'SECRET-VALUE' and no more") == "got '${env:S}' and no more"
    assert r.value("no") == "${env:N}"
    assert r.data({"a": ["x-secret-value", 3]}) == {"a": ["x-${env:S}", 3]}
