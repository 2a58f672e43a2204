"""Local secrets (`secrets/<name>.env`), the proxy's key, and local volumes."""

from __future__ import annotations

import pytest

from ml_agent.backends.local import envfiles, volumes
from ml_agent.errors import SandboxError
from tests.local.helpers import local_plan

ANTHROPIC = "https://api.anthropic.com"


def test_parse_env_reads_key_value_lines():
    text = "# comment\n\nexport A=1\nB = 'two words'\nC=\"x=y\"\nD=\n"
    assert envfiles.parse_env(text) == {"A": "1", "B": "two words", "C": "x=y", "D": ""}


def test_parse_env_never_echoes_a_bad_line():
    with pytest.raises(SandboxError, match=r"^f.env:2: expected KEY=VALUE$"):
        envfiles.parse_env("A=1\nsk-ant-secret-value\n", "f.env")


def test_a_missing_secret_names_its_file(tmp_path):
    with pytest.raises(SandboxError, match=rf"secret 'hf-write' not found: create "
                                          rf"{tmp_path}/secrets/hf-write.env"):
        envfiles.read_secret(tmp_path, "hf-write")
    with pytest.raises(SandboxError, match="not a plain name"):
        envfiles.read_secret(tmp_path, "../etc/passwd")


def test_proxy_key_prefers_the_secret_file_then_the_host_env_for_anthropic_only(tmp_path):
    host = {"ANTHROPIC_API_KEY": "sk-host"}
    assert envfiles.proxy_key(tmp_path, "anthropic-secret", ANTHROPIC, host) == "sk-host"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "anthropic-secret.env").write_text("ANTHROPIC_API_KEY=sk-file\n")
    assert envfiles.proxy_key(tmp_path, "anthropic-secret", ANTHROPIC, host) == "sk-file"
    # The host's key never follows a config to another upstream.
    with pytest.raises(SandboxError, match=r"no key for the proxy's upstream http://x.test"):
        envfiles.proxy_key(tmp_path, "other", "http://x.test", host)
    with pytest.raises(SandboxError, match="export ANTHROPIC_API_KEY, or put it in"):
        envfiles.proxy_key(tmp_path, "missing", ANTHROPIC, {})


def test_volumes_are_created_only_when_allowed(tmp_path):
    plan = local_plan()
    paths = volumes.ensure_volumes(plan, tmp_path)
    assert paths == {"data": str(tmp_path / "volumes" / "sandbox-data"),
                     "trackio": str(tmp_path / "volumes" / "sandbox-trackio")}
    strict = local_plan("volumes.data.name=fresh", "volumes.data.create_if_missing=false")
    with pytest.raises(SandboxError, match=r"volume 'fresh' does not exist .*mkdir -p"):
        volumes.ensure_volumes(strict, tmp_path)
    with pytest.raises(SandboxError, match="not a plain name"):
        volumes.volume_path(tmp_path, "..")
