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


def test_secret_files_others_can_read_are_warned_about_with_the_fix(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    key = folder / "anthropic-secret.env"
    key.write_text("ANTHROPIC_API_KEY=sk-ant-secret-value\n")
    key.chmod(0o600)
    assert envfiles.permission_warnings(tmp_path) == []
    key.chmod(0o644)
    (folder / "hf-write.env").write_text("HF_TOKEN=hf_x\n")
    (folder / "hf-write.env").chmod(0o660)
    assert envfiles.permission_warnings(tmp_path) == [
        f"{key} holds secrets and is accessible by its group and other users (mode 0644); "
        f"run `chmod 600 {key}`",
        f"{folder / 'hf-write.env'} holds secrets and is accessible by its group (mode 0660); "
        f"run `chmod 600 {folder / 'hf-write.env'}`",
    ]
    folder.chmod(0o777)
    assert f"run `chmod 700 {folder}`" in envfiles.permission_warnings(tmp_path)[0]
    assert not any("sk-ant" in w for w in envfiles.permission_warnings(tmp_path))
    assert envfiles.permission_warnings(tmp_path / "nowhere") == []


def test_up_and_doctor_warn_about_a_readable_key_file(tmp_path, monkeypatch):
    import subprocess
    import sys

    home = tmp_path / "home"
    key = home / "secrets" / "anthropic-secret.env"
    key.parent.mkdir(parents=True)
    key.write_text("ANTHROPIC_API_KEY=sk-ant-secret-value\n")
    key.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ML_AGENT_HOME": str(home),
           "COLUMNS": "1000"}
    code = "import sys; from ml_agent.cli import main; sys.exit(main())"
    doctor = subprocess.run([sys.executable, "-c", code, "doctor"], env=env,
                            capture_output=True, text=True)
    assert f"chmod 600 {key}" in doctor.stdout
    assert "sk-ant-secret-value" not in doctor.stdout + doctor.stderr
    # `up`: the local backend's check adds it to the warnings the CLI prints at start.
    from ml_agent.backends.local import LocalBackend

    monkeypatch.setenv("ML_AGENT_HOME", str(home))
    backend = LocalBackend(home)
    backend.check(local_plan())
    assert f"run `chmod 600 {key}`" in " ".join(backend.warnings)
