"""`ml-agent proxy token` and `ml-agent proxy serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ml_agent.cli import main
from ml_agent.contracts import TOKEN_PREFIX, hash_token
from tests.fakes.anthropic import FakeAnthropic
from tests.proxy.conftest import REAL_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_token_is_printed_once_and_only_its_hash_is_stored(tmp_path, capsys):
    tokens = tmp_path / "tokens.json"
    args = ["proxy", "token", "--run-id", "r1", "--ttl", "30m", "--budget", "2.5",
            "--tokens-file", str(tokens)]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith(TOKEN_PREFIX)
    stored = json.loads(tokens.read_text())
    assert token not in tokens.read_text()
    record = stored[hash_token(token)]
    assert record["run_id"] == "r1" and record["budget_usd"] == 2.5
    assert 1790 < record["expires_at"] - time.time() <= 1800
    assert tokens.stat().st_mode & 0o777 == 0o600
    assert main(args) == 0  # a second token joins the first
    assert len(json.loads(tokens.read_text())) == 2


def test_token_rejects_a_bad_ttl(tmp_path, capsys):
    assert main(["proxy", "token", "--ttl", "soon", "--tokens-file", str(tmp_path / "t")]) == 1
    assert "--ttl" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], env_key: str | None = REAL_KEY) -> subprocess.Popen:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(ROOT)}
    if env_key is not None:
        env["ANTHROPIC_API_KEY"] = env_key
    code = "import sys; from ml_agent.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, "proxy", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                if client.get(url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
    raise AssertionError("proxy serve did not come up")


@pytest.mark.parametrize("with_file", [True, False], ids=["tokens-file", "minted-at-start"])
def test_serve_forwards_with_the_key_from_the_env(tmp_path, capsys, with_file):
    port = free_port()
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        args = ["--upstream", fake.url, "--port", str(port)]
        if with_file:
            tokens = tmp_path / "tokens.json"
            main(["proxy", "token", "--run-id", "r1", "--tokens-file", str(tokens)])
            token = capsys.readouterr().out.strip()
            args += ["--tokens-file", str(tokens)]
        proc = start_serve(args)
        try:
            if not with_file:
                token = proc.stdout.readline().strip()
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            response = httpx.post(url + "/v1/messages", json={"model": "m", "messages": []},
                                  headers={"x-api-key": token})
            assert response.status_code == 200, response.text
            assert fake.calls[0].headers["x-api-key"] == REAL_KEY
            assert httpx.post(url + "/v1/messages", json={},
                              headers={"x-api-key": "nope"}).status_code == 401
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
    assert REAL_KEY not in out + err
    assert token not in err and out.count(token) <= 1


def test_serve_without_a_key_says_where_to_put_it():
    proc = start_serve(["--port", str(free_port())], env_key=None)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in err and "--key-env" in err


def mint_concurrently(tokens: Path, n: int) -> list[str]:
    """`n` `ml-agent proxy token` processes at once; their tokens."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(ROOT)}
    code = "import sys; from ml_agent.cli import main; sys.exit(main())"
    procs = [subprocess.Popen([sys.executable, "-c", code, "proxy", "token", "--run-id", f"r{i}",
                               "--tokens-file", str(tokens)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    minted = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        minted.append(out.strip())
    return minted


def test_concurrent_token_mints_all_land_and_the_proxy_keeps_working(tmp_path, capsys):
    # Unlocked, 8 writers lost tokens and left a torn file: the serving proxy answered 500.
    tokens = tmp_path / "tokens.json"
    port = free_port()
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        main(["proxy", "token", "--run-id", "r0", "--tokens-file", str(tokens)])
        minted = [capsys.readouterr().out.strip()]
        proc = start_serve(["--upstream", fake.url, "--port", str(port),
                            "--tokens-file", str(tokens)])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            for _ in range(3):
                minted += mint_concurrently(tokens, 8)
                assert set(json.loads(tokens.read_text())) == {hash_token(t) for t in minted}
            for token in minted:
                response = httpx.post(url + "/v1/messages", json={"model": "m", "messages": []},
                                      headers={"x-api-key": token})
                assert response.status_code == 200, response.text
        finally:
            proc.terminate()
            proc.communicate(timeout=10)
    assert sorted(os.listdir(tmp_path)) == ["tokens.json", "tokens.json.lock"]
