"""Fixtures for the agent tests.

`start_agent(env, *args)` starts the real agent/agent.py with an explicit environment (never
the shell's ANTHROPIC_* or CLAUDE*) and returns an `AgentProcess` reading its events.
`gateway` is what the agent talks to: the project's proxy with a run token in front of the
fake Anthropic API when the proxy exists, else the fake itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.harness import AGENT, REAL_KEY, RUN_ID, AgentProcess, Gateway
from tests.fakes.anthropic import FakeAnthropic


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """The project's proxy (real key inside) on loopback, a run token, the fake behind it."""
    from ml_agent.contracts import TokenRecord, hash_token, mint_token
    from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, ServerThread, create_app

    token = mint_token()
    tokens, usage = MemoryTokenStore(), MemoryUsageSink()
    tokens.put(hash_token(token), TokenRecord(run_id=RUN_ID, expires_at=time.time() + 3600,
                                              budget_usd=5.0))
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        app = create_app(upstream=fake.url, api_key=REAL_KEY, tokens=tokens, usage=usage)
        with ServerThread(app) as proxy:
            yield Gateway(url=proxy.url, token=token, fake=fake, through_proxy=True,
                          usage=usage)


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []
    workdir = tmp_path / "app"
    workdir.mkdir()

    def start(env: dict[str, str], *args: str) -> AgentProcess:
        proc = subprocess.Popen(
            [sys.executable, str(AGENT), *args],
            env=env,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        agent = AgentProcess(proc)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


