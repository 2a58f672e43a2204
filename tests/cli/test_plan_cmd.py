"""`ml-agent plan`: readable tables, Modal calls, cost, warnings, JSON; never a secret."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ml_agent import contracts
from ml_agent.cli import main
from ml_agent.cli.plan import HIDDEN, load_plan
from ml_agent.contracts import CONFIGS_DIR, ROOT
from ml_agent.plan import Plan

A10 = str(CONFIGS_DIR / "a10.yaml")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_shows_every_value_of_the_original_system(capsys):
    code, out, _ = run(capsys, "plan", A10)
    assert code == 0
    for value in [
        "app ml-agent",
        "backend modal",
        "Python 3.11",
        "git curl",
        "claude-agent-sdk==0.2.184 trackio==0.43.0",
        f"{ROOT}/agent/agent.py -> /agent/agent.py",
        f"{ROOT}/agent/protocol.py -> /agent/protocol.py",
        f"{ROOT}/.claude -> /app/.claude",
        "sandbox-data",
        "sandbox-trackio",
        "/root/.cache/huggingface/trackio",
        "/app",
        "HF_HOME",
        "/data/hf-cache",
        "TRACKIO_DIR",
        "github-secret",
        "A10",
        "1h (3600 s)",
        "anthropic-secret",
        "https://api.anthropic.com",
        "$20",
    ]:
        assert value in out, value
    lines = out.splitlines()
    volume_rows = [line for line in lines if "sandbox-data" in line or "sandbox-trackio" in line]
    assert all("yes" in row for row in volume_rows[:2]), "created if missing"


def test_plan_shows_the_modal_calls_and_the_cost(capsys):
    _, out, _ = run(capsys, "plan", A10)
    assert 'modal.Image.debian_slim(python_version="3.11")' in out
    assert 'image.apt_install("git", "curl")' in out
    assert f'image.add_local_dir("{ROOT}/.claude", "/app/.claude")' in out
    assert 'modal.Volume.from_name("sandbox-data", create_if_missing=True)' in out
    assert "modal.Sandbox.create(" in out
    assert 'gpu="A10"' in out and "timeout=3600" in out
    assert 'modal.Secret.from_name("github-secret")' in out
    assert "Worst-case cost (estimate)" in out
    assert "21.12" in out  # $1.10 GPU-hour + CPU/memory + the $20 budget
    assert "estimate from Modal's list prices of 2026-05" in out
    assert "github-secret, anthropic-secret exist in your workspace" in out
    assert "GPU A10 is available on your Modal plan" in out


def test_overrides_and_backend(capsys):
    code, out, _ = run(capsys, "plan", A10, "--set", "sandbox.gpu=h100:2", "--backend", "local")
    assert code == 0
    assert "backend local" in out
    assert "H100:2" in out
    assert "What `up` does locally" in out
    assert "modal.Sandbox.create" not in out


def test_plan_json_round_trips(capsys):
    code, out, _ = run(capsys, "plan", A10, "--json")
    assert code == 0
    plan = Plan.model_validate_json(out)
    assert plan == load_plan(A10)
    assert plan.launch is not None
    assert plan.launch.env["ANTHROPIC_API_KEY"] == contracts.TOKEN_PLACEHOLDER
    assert json.loads(out)["sandbox"]["gpu"] == "A10"


@pytest.mark.parametrize("name", [p.name for p in sorted(CONFIGS_DIR.glob("*.yaml"))])
def test_plan_works_for_every_shipped_config(capsys, name):
    code, out, _ = run(capsys, "plan", str(CONFIGS_DIR / name))
    assert code == 0
    assert "Worst-case cost" in out


SECRET_VALUE = "hf_THISISASECRETVALUE"


@pytest.fixture
def leaky_config(tmp_path: Path) -> Path:
    (tmp_path / "agent.py").write_text("print()\n")
    path = tmp_path / "leaky.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            app: leaky
            image:
              layers:
                - file: {{src: agent.py, dest: /agent/agent.py}}
            volumes:
              data: {{name: leaky-data, mount: /data}}
            sandbox:
              env:
                HF_TOKEN: {SECRET_VALUE}
                PLAIN: visible
            proxy:
              secret: anthropic-secret
            """
        )
    )
    return path


@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_plan_never_prints_a_secret_value_or_a_token(capsys, leaky_config, fmt):
    code, out, err = run(capsys, "plan", str(leaky_config), *fmt)
    assert code == 0
    assert SECRET_VALUE not in out + err
    assert contracts.TOKEN_PREFIX not in out + err
    assert HIDDEN in out
    assert "visible" in out
    if not fmt:
        assert "sandbox.env.HF_TOKEN looks like a secret" in out


def test_an_invalid_config_is_a_user_error(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("app: x\nimage: {}\nvolumes: {}\nsandbox: {gpu: A11}\n")
    code, out, err = run(capsys, "plan", str(bad))
    assert code == 1
    assert "unknown GPU 'A11'; did you mean 'A10'?" in err
    assert "Traceback" not in err
    assert out == ""


def test_bad_backend_is_a_usage_error(capsys):
    code, _, err = run(capsys, "plan", A10, "--backend", "kubernetes")
    assert code == 2
    assert "modal or local" in err


@pytest.mark.parametrize("command", ["plan", "schema"])
def test_help_has_an_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert f"ml-agent {command}" in out


# -- untrusted configs: plan prints where a value came from, never the value ---------------

from tests.config.hostile import (  # noqa: E402
    CASES,
    DECOY_ENV,
    DECOY_KEY,
    ENV_NAME,
    Case,
    Hostile,
    leaked,
)


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hostile:
    world = Hostile.build(tmp_path)
    monkeypatch.chdir(world.project)
    monkeypatch.setenv(ENV_NAME, DECOY_ENV)
    monkeypatch.setenv("ANTHROPIC_API_KEY", DECOY_KEY)
    monkeypatch.delenv("ML_AGENT_ALLOW_OUTSIDE", raising=False)
    return world


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plan_of_a_hostile_config_prints_no_secret(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], case: Case, fmt: list[str]
) -> None:
    code, out, err = run(capsys, "plan", *fmt, case.config)
    assert code == 1 and out == ""
    assert leaked(err) == []
    assert f"{case.where}: " in err or err.startswith(f"error: {case.where}: ")
    assert case.rule in err and case.flag in err


ENV_PLAN = f"""\
extends: good.yaml
app: app-${{env:{ENV_NAME}}}
sandbox:
  workdir: /work/${{env:{ENV_NAME}}}
  env:
    FOO: ${{env:ANTHROPIC_API_KEY}}
    BAR: bar-${{sandbox.env.FOO}}
    PLAIN: ${{env:PLAIN_SETTING}}
volumes:
  data: {{name: "vol-${{env:{ENV_NAME}}}", mount: /data}}
"""


@pytest.mark.parametrize("backend", ["local", "modal"])
@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["text", "json"])
def test_plan_shows_env_values_by_name_in_every_format(
    hostile: Hostile,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: list[str],
    backend: str,
) -> None:
    monkeypatch.setenv("PLAIN_SETTING", "yes")  # short: still shown by name where it stands
    (hostile.project / "configs" / "env_plan.yaml").write_text(ENV_PLAN)
    code, out, err = run(capsys, "plan", *fmt, "--backend", backend, "configs/env_plan.yaml")
    assert code == 0, err
    assert leaked(out + err) == []
    key = "${env:ANTHROPIC_API_KEY}"
    decoy = f"${{env:{ENV_NAME}}}"
    if fmt:
        plan = json.loads(out)
        assert plan["app"] == f"app-{decoy}"
        assert plan["sandbox"]["workdir"] == f"/work/{decoy}"
        assert plan["sandbox"]["env"] == {
            "FOO": key,
            "BAR": f"bar-{key}",  # through a reference to a value from env
            "PLAIN": "${env:PLAIN_SETTING}",
        }
        assert plan["volumes"][0]["name"] == f"vol-{decoy}"
    else:
        for shown in (f"app-{decoy}", f"/work/{decoy}", key, f"bar-{key}", f"vol-{decoy}"):
            assert shown in out, shown
    # Hashes over the values from env would let a reader of the output try values of a
    # short secret until one matches: none is printed, in whole or in part.
    from ml_agent.config import load_config
    from ml_agent.plan import build_plan

    real = build_plan(load_config("configs/env_plan.yaml", [f"backend={backend}"]),
                      "configs/env_plan.yaml")
    for value in (real.config_hash, real.app_hash):
        assert value[:12] not in out + err
    assert "<hidden: covers ${env:...}>" in out


def test_the_plan_the_backends_get_keeps_the_real_values(hostile: Hostile) -> None:
    from ml_agent.config import load_config
    from ml_agent.plan import build_plan

    (hostile.project / "configs" / "env_plan.yaml").write_text(
        ENV_PLAN.replace("${env:PLAIN_SETTING}", "plain")
    )
    config = load_config("configs/env_plan.yaml")
    plan = build_plan(config, "configs/env_plan.yaml")
    assert plan.sandbox.env["FOO"] == DECOY_KEY
    assert plan.sandbox.workdir == f"/work/{DECOY_ENV}"
    assert load_plan("configs/env_plan.yaml").sandbox.env["FOO"] == "${env:ANTHROPIC_API_KEY}"


def test_plan_takes_allow_outside(hostile: Hostile, capsys: pytest.CaptureFixture[str]) -> None:
    (hostile.secrets / "skills").mkdir()
    config = hostile.project / "configs" / "skills.yaml"
    config.write_text(
        "extends: good.yaml\nimage: {layers: [{dir: {src: ../../secrets/skills, dest: /s}}]}\n"
    )
    assert run(capsys, "plan", str(config))[0] == 1
    code, out, _ = run(capsys, "plan", "--allow-outside", str(hostile.secrets), str(config))
    assert code == 0
    assert f"{hostile.secrets}/skills -> /s" in out


def test_up_refuses_a_hostile_config_before_launching_and_takes_the_flag(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "up", "configs/dotdot.yaml", "--task", "hi", "--detach")
    assert code == 1 and leaked(out + err) == []
    assert "configs/dotdot.yaml:1:10: extends:" in err and "--allow-outside" in err
    allow = ("--allow-outside", str(hostile.secrets))
    code, out, err = run(capsys, "up", *allow, "configs/dotdot.yaml", "--task", "hi", "--detach")
    assert code == 1 and leaked(out + err) == []
    assert "not text" in err  # read (allowed), and still not quoted
