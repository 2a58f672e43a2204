"""The Plan: golden per shipped config, copy decisions, content hashes, the launcher env.

Goldens live in tests/testdata/plans/<config>.json with the checkout path as `<repo>` and
the content hash (which follows agent/ and .claude/ edits) as `<config hash>`. After an
intended change, regenerate and review the diff:
    ML_AGENT_REGEN=1 python -m pytest tests/test_plan.py
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from ml_agent import contracts
from ml_agent.config import load_config
from ml_agent.config.models import LaunchConfig
from ml_agent.contracts import CONFIGS_DIR, ROOT, TOKEN_PLACEHOLDER, protocol
from ml_agent.plan import Plan, build_plan, launch_env, worst_case_cost

GOLDEN_DIR = Path(__file__).parent / "testdata" / "plans"
SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))
RUN_ID = "20261126-0315-a1b2c3"


def _golden_text(plan: Plan) -> str:
    text = plan.model_dump_json(indent=2).replace(str(ROOT), "<repo>")
    return text.replace(plan.config_hash, "<config hash>") + "\n"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_plans_match_their_golden(path: Path):
    plan = build_plan(load_config(path), path).for_launch(RUN_ID)
    golden = GOLDEN_DIR / f"{path.stem}.json"
    text = _golden_text(plan)
    if os.environ.get("ML_AGENT_REGEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden for {path.name}: run with ML_AGENT_REGEN=1"
    assert text == golden.read_text(encoding="utf-8")


def test_every_golden_has_a_config():
    assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == {p.stem for p in SHIPPED}


def test_a10_is_the_original_system():
    plan = build_plan(load_config(CONFIGS_DIR / "a10.yaml"), CONFIGS_DIR / "a10.yaml")
    assert plan.app == "ml-agent"
    assert plan.backend == "modal"
    assert plan.image.python == "3.11"
    kinds = [(layer.kind, getattr(layer, "packages", None)) for layer in plan.image.layers]
    assert kinds[:2] == [
        ("apt", ("git", "curl")),
        ("pip", ("claude-agent-sdk==0.2.184", "trackio==0.43.0")),
    ]
    files = {layer.dest: layer.src for layer in plan.image.layers if layer.kind in ("file", "dir")}
    assert files == {
        "/agent/agent.py": str(ROOT / "agent" / "agent.py"),
        "/agent/protocol.py": str(ROOT / "agent" / "protocol.py"),
        "/app/.claude": str(ROOT / ".claude"),
    }
    assert [(v.key, v.name, v.mount, v.create_if_missing) for v in plan.volumes] == [
        ("data", "sandbox-data", "/data", True),
        ("trackio", "sandbox-trackio", "/root/.cache/huggingface/trackio", True),
    ]
    assert plan.sandbox.workdir == "/app"
    assert plan.sandbox.env == {
        "HF_HOME": "/data/hf-cache",
        "TRACKIO_DIR": "/root/.cache/huggingface/trackio",
    }
    assert plan.sandbox.secrets == ("github-secret",)
    assert plan.sandbox.gpu == "A10"
    assert plan.sandbox.timeout_s == 3600
    base = build_plan(load_config(CONFIGS_DIR / "base.yaml"), CONFIGS_DIR / "base.yaml")
    assert base.sandbox.secrets == () and base.sandbox.gpu is None


# -- self-contained configs for the rules below --------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "agent.py").write_text("print('agent')\n")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "CLAUDE.md").write_text("# instructions\n")
    return tmp_path


BASE: dict[str, Any] = {
    "app": "demo",
    "image": {
        "python": "3.11",
        "layers": [
            {"apt": ["git"]},
            {"pip": ["trackio==0.43.0"]},
            {"file": {"src": "agent/agent.py", "dest": "/agent/agent.py"}},
            {"dir": {"src": "ws", "dest": "/app/ws"}},
        ],
    },
    "volumes": {
        "data": {"name": "demo-data", "mount": "/data"},
        "trackio": {"name": "demo-trackio", "mount": "/trackio"},
    },
    "sandbox": {"gpu": "A10", "timeout": "1h", "env": {"HF_HOME": "/data/hf"}},
    "proxy": {"secret": "anthropic-secret", "budget_usd": 20},
    "syncer": {"enabled": False, "volume": "trackio", "namespace": "me", "secret": "hf"},
}


def plan_of(base_dir: Path, data: dict[str, Any] | None = None, **changes: Any) -> Plan:
    data = copy.deepcopy(data or BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    config = LaunchConfig.model_validate(data, context={"base_dir": base_dir})
    return build_plan(config, base_dir / "demo.yaml")


def test_local_files_are_mounted_when_nothing_is_built_after_them(project):
    plan = plan_of(project)
    assert [getattr(layer, "copy_", None) for layer in plan.image.layers] == [
        None,
        None,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "step", [{"pip": ["x"]}, {"apt": ["x"]}, {"run": ["x"]}, {"env": {"A": "1"}}]
)
def test_a_build_step_after_local_files_makes_them_copies(project, step):
    layers = [*BASE["image"]["layers"], step]
    plan = plan_of(project, image__layers=layers)
    copies = [layer.copy_ for layer in plan.image.layers if layer.kind in ("file", "dir")]
    assert copies == [True, True]


def test_only_the_files_before_a_build_step_are_copied(project):
    file_layer, dir_layer = BASE["image"]["layers"][2:]
    plan = plan_of(project, image__layers=[file_layer, {"run": ["make"]}, dir_layer])
    assert [getattr(layer, "copy_", None) for layer in plan.image.layers] == [True, None, False]


def test_paths_are_absolute(project):
    plan = plan_of(project)
    assert plan.config_path == str(project / "demo.yaml")
    assert plan.config_name == "demo"
    srcs = [layer.src for layer in plan.image.layers if layer.kind in ("file", "dir")]
    assert srcs == [str(project / "agent" / "agent.py"), str(project / "ws")]


def test_hash_is_stable_and_ignores_where_the_checkout_lives(project, tmp_path_factory):
    first, second = plan_of(project), plan_of(project)
    assert first.config_hash == second.config_hash and len(first.config_hash) == 64
    moved = tmp_path_factory.mktemp("moved")
    shutil.copytree(project, moved, dirs_exist_ok=True)
    assert plan_of(moved).config_hash == first.config_hash


@pytest.mark.parametrize(
    "change",
    [
        {"app": "demo2"},
        {"backend": "local"},
        {"image__python": "3.12"},
        {"image__layers": BASE["image"]["layers"][1:]},
        {"volumes__data": {"name": "other", "mount": "/data"}},
        {"volumes__data": {"name": "demo-data", "mount": "/data2"}},
        {"volumes__trackio": {"name": "demo-trackio", "mount": "/trackio", "read_only": True}},
        {"sandbox__gpu": "A10:2"},
        {"sandbox__timeout": "2h"},
        {"sandbox__idle_timeout": "10m"},
        {"sandbox__cpu": 2},
        {"sandbox__memory": "8GiB"},
        {"sandbox__env": {"HF_HOME": "/data/other"}},
        {"sandbox__secrets": ["github-secret"]},
        {"sandbox__network": {"allowlist": ["pypi.org"]}},
        {"agent__model": "claude-opus-4-1"},
        {"agent__max_turns": 5},
        {"agent__allowed_tools": ["Bash"]},
        {"agent__permission_mode": "acceptEdits"},
        {"agent__system_prompt_append": "be brief"},
        {"proxy__budget_usd": 5},
        {"proxy__allowed_paths": ["POST /v1/messages"]},
        {"syncer__enabled": True},
        {"syncer__interval": "1m"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_hash_changes_with_every_launch_relevant_field(project, change):
    assert plan_of(project, **change).config_hash != plan_of(project).config_hash


@pytest.mark.parametrize(
    "change",
    [
        {"sandbox__gpu": "a10g"},
        {"sandbox__timeout": 3600},
        {"sandbox__timeout": "60m"},
        {"volumes__data": {"name": "demo-data", "mount": "/data", "create_if_missing": True}},
        {"proxy__budget_usd": 20.0},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))}",
)
def test_hash_ignores_spellings_of_the_same_launch(project, change):
    assert plan_of(project, **change).config_hash == plan_of(project).config_hash


def test_hash_is_the_same_in_another_process():
    import subprocess
    import sys

    path = CONFIGS_DIR / "a10.yaml"
    code = (
        "from ml_agent.config import load_config; from ml_agent.plan import build_plan; "
        f"print(build_plan(load_config({str(path)!r}), {str(path)!r}).config_hash)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == build_plan(load_config(path), path).config_hash


def test_hash_ignores_the_order_of_volumes(project):
    reordered = {"trackio": BASE["volumes"]["trackio"], "data": BASE["volumes"]["data"]}
    assert plan_of(project, volumes=reordered).config_hash == plan_of(project).config_hash


def test_hash_follows_local_file_contents(project):
    before = plan_of(project).config_hash
    (project / "ws" / "__pycache__").mkdir()
    (project / "ws" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert plan_of(project).config_hash == before, "caches are not part of a launch"
    (project / "agent" / "agent.py").write_text("print('edited')\n")
    edited = plan_of(project).config_hash
    assert edited != before
    (project / "ws" / "notes.md").write_text("new file\n")
    assert plan_of(project).config_hash != edited


def test_app_hash_covers_the_proxy_and_syncer_only(project):
    base = plan_of(project)
    assert plan_of(project, sandbox__gpu="H100").app_hash == base.app_hash
    assert plan_of(project, agent__model="x").app_hash == base.app_hash
    assert plan_of(project, proxy__budget_usd=5).app_hash != base.app_hash
    assert plan_of(project, syncer__enabled=True).app_hash != base.app_hash


# -- per launch ----------------------------------------------------------------------------


def test_for_launch_adds_the_run_folder_and_a_masked_env(project):
    plan = plan_of(project).for_launch(RUN_ID)
    assert plan.launch is not None
    assert plan.launch.run_id == RUN_ID
    assert plan.launch.run_dir == f"/data/runs/{RUN_ID}"
    assert plan.launch.env["ANTHROPIC_API_KEY"] == TOKEN_PLACEHOLDER
    assert plan.launch.env.keys() == protocol.ENV.keys()


def test_launch_env_has_exactly_the_protocol_keys_plus_the_config_env(project):
    plan = plan_of(project, agent__allowed_tools=["Bash", "Read"]).for_launch(RUN_ID)
    token = contracts.mint_token()
    env = launch_env(plan, base_url="https://proxy.example", token=token)
    assert env.keys() == protocol.ENV.keys() | {"HF_HOME"}
    assert env["ANTHROPIC_API_KEY"] == token
    assert env["ANTHROPIC_BASE_URL"] == "https://proxy.example"
    assert env["ML_AGENT_RUN_DIR"] == f"/data/runs/{RUN_ID}"
    assert env["CLAUDE_CONFIG_DIR"].startswith(env["ML_AGENT_RUN_DIR"] + "/")
    assert env["ML_AGENT_ALLOWED_TOOLS"] == "Bash,Read"
    assert env["ML_AGENT_MAX_TURNS"] == "100"
    assert env["ML_AGENT_BUDGET_USD"] == "20"
    assert env["ML_AGENT_CONFIG_HASH"] == plan.config_hash
    assert env["ML_AGENT_HF_NAMESPACE"] == ""  # the syncer is off
    assert env["HF_HOME"] == "/data/hf"
    assert all(isinstance(v, str) for v in env.values())


def test_launch_env_names_the_namespace_only_when_syncing(project):
    plan = plan_of(project, syncer__enabled=True).for_launch(RUN_ID)
    assert launch_env(plan, base_url="u", token="t")["ML_AGENT_HF_NAMESPACE"] == "me"


def test_a_sweep_run_logs_to_the_sweeps_trackio_project_under_its_label(project):
    sweep = "sw-20261204-1612-5d1e7b"
    plan = plan_of(project).for_launch(RUN_ID, sweep=sweep, trackio_run_name="r01-m-b")
    env = launch_env(plan, base_url="u", token="t")
    assert (env["ML_AGENT_TRACKIO_PROJECT"], env["ML_AGENT_TRACKIO_RUN_NAME"]) == (
        sweep, "r01-m-b")
    # The local supervisor and Modal's `up --resume` read the plan back from its JSON; a new
    # leg of the run (the same run id) keeps its names, another run does not get them.
    kept = Plan.model_validate(plan.model_dump(mode="json"))
    leg = kept.for_launch(RUN_ID, resume_session="0f6e2d3c-aaaa-bbbb-cccc-000000000000")
    assert launch_env(leg, base_url="u", token="t")["ML_AGENT_TRACKIO_PROJECT"] == sweep
    assert leg.launch is not None and leg.launch.trackio_run_name == "r01-m-b"
    other = kept.for_launch("20261126-0316-d4e5f6")
    assert launch_env(other, base_url="u", token="t")["ML_AGENT_TRACKIO_PROJECT"] == ""


def test_a_lone_run_leaves_the_trackio_names_to_the_agent(project):
    env = launch_env(plan_of(project).for_launch(RUN_ID), base_url="u", token="t")
    assert env["ML_AGENT_TRACKIO_PROJECT"] == env["ML_AGENT_TRACKIO_RUN_NAME"] == ""


def test_launch_env_needs_a_launch(project):
    with pytest.raises(ValueError, match="for_launch"):
        launch_env(plan_of(project), base_url="u", token="t")


def test_plan_json_round_trips(project):
    plan = plan_of(project).for_launch(RUN_ID)
    text = plan.model_dump_json()
    assert json.loads(text)["image"]["layers"][2]["copy"] is False
    assert Plan.model_validate_json(text) == plan


def test_other_upstream_uses_its_own_secret(project):
    plan = plan_of(
        project,
        proxy={
            "secret": "anthropic-secret",
            "upstream": "https://gw.example",
            "upstream_secret": "gw",
        },
    )
    assert plan.proxy.secret == "gw"
    assert plan.proxy.upstream == "https://gw.example"


def test_worst_case_cost(project):
    cost = worst_case_cost(plan_of(project, sandbox__gpu="H100:2", sandbox__timeout="2h"))
    assert cost["gpu"] == pytest.approx(3.95 * 2 * 2)
    assert cost["api"] == 20
    assert cost["total"] == pytest.approx(sum(v for k, v in cost.items() if k != "total"), abs=0.02)
    local = worst_case_cost(plan_of(project, backend="local"))
    assert local == {"gpu": 0, "cpu": 0, "memory": 0, "api": 20, "total": 20}
