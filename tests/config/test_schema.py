"""The editor JSON Schema: generated, committed, fresh, and right about real files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # a dependency of claude-agent-sdk (through mcp)
import pytest
import yaml
from pydantic import BaseModel

from ml_agent.config import models, schema
from ml_agent.contracts import CONFIGS_DIR

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../schema/ml-agent.schema.json"


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema.build_schema())


def test_committed_schema_is_fresh():
    committed = schema.SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == schema.render(), (
        "schema/ml-agent.schema.json is stale: run `ml-agent schema -o schema/ml-agent.schema.json`"
    )


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(schema.build_schema())


def test_every_field_is_described():
    missing = []
    for name in dir(models):
        model = getattr(models, name)
        if isinstance(model, type) and issubclass(model, BaseModel) and model is not models.Strict:
            missing += [
                f"{model.__name__}.{field}"
                for field, info in model.model_fields.items()
                if not info.description
            ]
    assert missing == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_have_the_modeline(path: Path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_match_the_editor_schema(path: Path):
    """Files with `extends` are partial and `${...}` stands for values: both are fine."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in _validator().iter_errors(data)]
    assert errors == []


def test_a_file_without_extends_needs_the_top_level_keys():
    errors = list(_validator().iter_errors({"app": "x"}))
    assert errors, "app alone is not a whole config"
    assert list(_validator().iter_errors({"extends": "base.yaml", "sandbox": {"gpu": "A10"}})) == []


@pytest.mark.parametrize(
    "data",
    [
        {"extends": "base.yaml", "gpus": "A10"},
        {"extends": "base.yaml", "sandbox": {"gpu": "A11"}},
        {"extends": "base.yaml", "sandbox": {"gpu": "A10:x"}},
        {"extends": "base.yaml", "image": {"python": 3.1}},
        {"extends": "base.yaml", "image": {"layers": [{"apt": ["git"], "pip": ["x"]}]}},
        {"extends": "base.yaml", "sandbox": {"network": "closed"}},
        {"extends": "base.yaml", "agent": {"permission_mode": "yolo"}},
    ],
)
def test_the_editor_schema_flags_mistakes(data):
    assert list(_validator().iter_errors(data)), json.dumps(data)


@pytest.mark.parametrize(
    "data",
    [
        {"extends": "base.yaml", "sandbox": {"gpu": "a10g:2", "timeout": "2h", "memory": "8GiB"}},
        {"extends": "base.yaml", "sandbox": {"timeout": "${env:TIMEOUT:-1h}"}},
        {"extends": "base.yaml", "sandbox": {"network": {"allowlist": ["pypi.org"]}}},
        {"extends": "base.yaml", "volumes": {"data": {"mount": "/mnt/data"}}},
        {"extends": "base.yaml", "proxy": {"budget_usd": "${env:BUDGET}"}},
    ],
)
def test_the_editor_schema_accepts_shorthand_and_partial_files(data):
    assert list(_validator().iter_errors(data)) == []


def test_schema_command_prints_and_writes(tmp_path, capsys):
    from ml_agent.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.build_schema()
    target = tmp_path / "out.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == schema.render()
