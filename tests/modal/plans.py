"""Plans for the Modal backend's tests, shaped like configs/a10.yaml, built by hand.

Hand-built so the builder is tested against the Plan contract alone; `a10_plan` switches to
`build_plan(configs/a10.yaml)` in test_contract.py once the config loader exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_agent.plan import Plan


def a10_plan_dict(files: Path) -> dict[str, Any]:
    """The a10 launch with local files under `files` (agent.py and a .claude dir)."""
    agent = files / "agent"
    claude = files / ".claude"
    agent.mkdir(parents=True, exist_ok=True)
    claude.mkdir(parents=True, exist_ok=True)
    (agent / "agent.py").write_text("print('agent')\n")
    (claude / "CLAUDE.md").write_text("# instructions\n")
    return {
        "app": "ml-agent",
        "backend": "modal",
        "config_path": str(files / "configs" / "a10.yaml"),
        "config_name": "a10",
        "image": {
            "python": "3.11", "builder": "2026.10",
            "layers": [
                {"kind": "apt", "packages": ["git", "curl"]},
                {"kind": "pip", "packages": ["claude-agent-sdk", "trackio"]},
                {"kind": "env", "env": {"PYTHONUNBUFFERED": "1"}},
                {"kind": "file", "src": str(agent / "agent.py"), "dest": "/agent/agent.py",
                 "copy": False},
                {"kind": "dir", "src": str(claude), "dest": "/app/.claude", "copy": False},
            ],
        },
        "volumes": [
            {"key": "data", "name": "sandbox-data", "mount": "/data",
             "create_if_missing": True, "read_only": False},
            {"key": "trackio", "name": "sandbox-trackio",
             "mount": "/root/.cache/huggingface/trackio", "create_if_missing": True,
             "read_only": False},
        ],
        "sandbox": {
            "gpu": "A10", "timeout_s": 3600, "idle_timeout_s": 1200, "workdir": "/app",
            "cpu": None, "memory_mib": None,
            "env": {"HF_HOME": "/data/hf-cache", "TRACKIO_DIR": "/root/.cache/huggingface/trackio"},
            "secrets": [], "network": {"mode": "open", "domains": []},
        },
        "agent": {
            "entrypoint": "/agent/agent.py", "model": "claude-sonnet-4-5", "max_turns": 100,
            "allowed_tools": [], "permission_mode": "bypassPermissions",
            "system_prompt_append": None,
        },
        "proxy": {
            "enabled": True, "secret": "anthropic-secret", "upstream": "https://api.anthropic.com",
            "budget_usd": 20.0,
            "allowed_paths": ["POST /v1/messages", "POST /v1/messages/count_tokens",
                              "GET /v1/models"],
        },
        "syncer": {
            "enabled": True, "volume": "trackio", "volume_name": "sandbox-trackio",
            "mount": "/root/.cache/huggingface/trackio", "namespace": "my-org",
            "space_id": "my-org/ml-agent-metrics", "secret": "hf-write", "private": True,
            "interval_s": 30.0,
        },
        "config_hash": "c0ffee" * 4,
        "app_hash": "a99" * 8,
    }


def a10_plan(files: Path, run_id: str = "20261126-0315-a1b2c3", **changes: Any) -> Plan:
    data = a10_plan_dict(files)
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return Plan.model_validate(data).for_launch(run_id)


def config_plan(
    name: str = "a10.yaml", *overrides: str, run_id: str = "20261126-0315-a1b2c3"
) -> Plan:
    """The Plan of a shipped config (configs/NAME) with `--set` overrides, for one launch."""
    from ml_agent.config import load_config
    from ml_agent.contracts import CONFIGS_DIR
    from ml_agent.plan import build_plan

    path = CONFIGS_DIR / name
    return build_plan(load_config(path, list(overrides)), path).for_launch(run_id)
