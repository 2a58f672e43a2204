"""The editor JSON Schema of a config file, generated from LaunchConfig (`ml-agent schema`).

Editors see one file at a time, so the schema describes a *file*, not a merged config:
- a file with `extends:` is partial: the top-level keys are required only without it, and
  mappings that deep-merge (sections, volumes) require nothing (lists replace, so a layer
  item keeps its required key);
- `${...}` strings are accepted wherever a value would be (the loader interpolates them).
The committed copy is `schema/ml-agent.schema.json`; a test fails when it is stale.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ml_agent.contracts import ROOT

SCHEMA_PATH = ROOT / "schema" / "ml-agent.schema.json"
#: A string holding a `${...}` reference, accepted in place of any value.
INTERPOLATION = {
    "type": "string",
    "pattern": r"\$\{[^}]+\}",
    "description": "${volumes.<key>.mount}, ${env:NAME} or ${env:NAME:-default}",
}
#: Models whose instances are list items (never deep-merged): they keep `required`.
_LIST_ITEM_MODELS = frozenset(
    {
        "AptLayer",
        "PipLayer",
        "EnvLayer",
        "RunLayer",
        "FileLayer",
        "DirLayer",
        "LocalFile",
        "LocalDir",
    }
)


def _accepts_interpolation(node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or anyOf [node, ${...} string] when node would refuse such a string."""
    if node.get("type") == "string" and not ({"pattern", "enum", "const"} & node.keys()):
        return node
    meta: dict[str, Any] = {
        k: node[k] for k in ("title", "description", "default", "examples") if k in node
    }
    body = {k: v for k, v in node.items() if k not in meta}
    return {**meta, "anyOf": [body, INTERPOLATION]}


def _walk(node: Any) -> Any:
    if isinstance(node, list):
        return [_walk(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _walk(v) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _accepts_interpolation(v) for k, v in out["properties"].items()}
    for key in ("additionalProperties", "items"):
        if isinstance(out.get(key), dict):
            out[key] = _accepts_interpolation(out[key])
    if isinstance(out.get("patternProperties"), dict):
        out["patternProperties"] = {
            k: _accepts_interpolation(v) for k, v in out["patternProperties"].items()
        }
    return out


def build_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one config file as an editor sees it."""
    from ml_agent.config.models import LaunchConfig

    schema = copy.deepcopy(LaunchConfig.model_json_schema())
    defs = schema["$defs"]
    for name, model in defs.items():
        if name not in _LIST_ITEM_MODELS:
            model.pop("required", None)
    # `network` also takes the shorthand strings open / blocked.
    network = defs["SandboxConfig"]["properties"]["network"]
    meta = {k: network.pop(k) for k in ("title", "description", "default") if k in network}
    defs["SandboxConfig"]["properties"]["network"] = {
        **meta,
        "anyOf": [{"type": "string", "enum": ["open", "blocked"]}, network],
    }
    required = schema.pop("required", [])
    schema["properties"] = {
        "extends": {
            "type": "string",
            "description": (
                "Another config file this one builds on (relative to this file): maps "
                "deep-merge, lists replace."
            ),
        },
        **schema["properties"],
    }
    schema = _walk(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "ml-agent config",
        "if": {"required": ["extends"]},
        "then": {},
        "else": {"required": required},
    }


def render() -> str:
    """The schema as committed: 2-space JSON with a final newline."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def write(path: str | Path = SCHEMA_PATH) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    return target
