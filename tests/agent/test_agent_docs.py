"""The agent's instructions (.claude/) agree with the shipped configs and with themselves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from ml_agent.contracts import CLAUDE_DIR, CONFIGS_DIR

DOCS = sorted(CLAUDE_DIR.rglob("*.md"))
SKILLS = sorted(CLAUDE_DIR.glob("skills/*/SKILL.md"))
# An absolute path: starts at a '/' that is not part of a URL, a `$VAR/...` or a relative path.
ABS_PATH = re.compile(r"(?<![\w:/.$}~\-\]])(/[A-Za-z0-9_.\-/]*[A-Za-z0-9_\-])")
ENV_ASSIGNMENT = re.compile(r"\b([A-Z][A-Z0-9_]+)=(/[A-Za-z0-9_.\-/]+)")


def config_facts() -> tuple[set[str], dict[str, set[str]], str]:
    """Every absolute path the shipped configs declare (mounts, dests, workdir, env values),
    each env name with its values, and the .claude dir's dest."""
    paths: set[str] = set()
    env: dict[str, set[str]] = {}
    claude_dest = ""
    mounts: dict[str, str] = {}
    docs = [yaml.safe_load(p.read_text()) or {} for p in sorted(CONFIGS_DIR.glob("*.yaml"))]
    for doc in docs:
        for key, volume in (doc.get("volumes") or {}).items():
            if isinstance(volume, dict) and "mount" in volume:
                paths.add(volume["mount"])
                mounts[f"${{volumes.{key}.mount}}"] = volume["mount"]  # for ${...} values
    for doc in docs:
        for layer in (doc.get("image") or {}).get("layers") or []:
            for kind, spec in layer.items():
                if kind in ("file", "dir") and isinstance(spec, dict):
                    paths.add(spec["dest"])
                    if kind == "dir" and Path(spec["src"]).name == ".claude":
                        claude_dest = spec["dest"]
        sandbox = doc.get("sandbox") or {}
        if sandbox.get("workdir"):
            paths.add(sandbox["workdir"])
        for name, value in (sandbox.get("env") or {}).items():
            value = mounts.get(str(value), str(value))
            env.setdefault(name, set()).add(value)
            if value.startswith("/"):
                paths.add(value)
        entrypoint = (doc.get("agent") or {}).get("entrypoint")
        if entrypoint:
            paths.add(entrypoint)
    return paths, env, claude_dest


def doc_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in ABS_PATH.findall(text)}


def test_configs_declare_what_the_docs_rely_on():
    paths, env, claude_dest = config_facts()
    assert claude_dest == "/app/.claude"
    assert env["HF_HOME"] == {"/data/hf-cache"}
    assert env["TRACKIO_DIR"] == {"/root/.cache/huggingface/trackio"}
    assert "/data" in paths and "/app" in paths


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(CLAUDE_DIR)))
def test_every_absolute_path_in_the_docs_exists_in_the_configs(doc: Path):
    paths, env, claude_dest = config_facts()
    text = doc.read_text()
    mentioned = doc_paths(text)
    assert mentioned, "expected the doc to mention sandbox paths"
    for path in sorted(mentioned):
        assert any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths), (
            f"{doc.name} mentions {path}, which no shipped config mounts, copies or sets"
        )
        if path.startswith(claude_dest + "/"):  # shipped files must exist in the repo
            local = CLAUDE_DIR / path[len(claude_dest) + 1 :]
            assert local.exists(), f"{doc.name} mentions {path}; {local} does not exist"
    for name, value in ENV_ASSIGNMENT.findall(text):
        if name in env:
            assert value in env[name], f"{doc.name} says {name}={value}; configs: {env[name]}"


@pytest.mark.parametrize("skill", SKILLS, ids=lambda p: p.parent.name)
def test_skills_have_front_matter_and_valid_python(skill: Path):
    text = skill.read_text()
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "a skill starts with YAML front matter"
    meta = yaml.safe_load(match.group(1))
    assert meta["name"] == skill.parent.name
    assert 20 < len(meta["description"]) <= 1024
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        ast.parse(block)


def test_both_skills_are_shipped():
    assert {p.parent.name for p in SKILLS} == {"transformers", "trackio"}


def test_docs_never_tell_the_agent_to_upload_metrics_itself():
    text = "\n".join(p.read_text() for p in DOCS)
    assert 'trackio_static_space_id=False' in text and "trackio_space_id=None" in text
    for paragraph in re.split(r"\n\s*\n|\n(?=\d\. |- )", text):
        if re.search(r"TRACKIO_SPACE_ID|trackio\.sync|trackio sync", paragraph):
            assert re.search(r"\b[Nn]ever\b", paragraph), paragraph
