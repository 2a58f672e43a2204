"""The contracts between the parts (DESIGN.md), in one place: run id, tokens, registry.

The launcher -> agent env table, the agent protocol and the result.json keys live in
`agent/protocol.py` (the agent imports nothing from ml_agent); `protocol` below is that
same module, loaded from its file. Standard library only: `ml-agent validate` imports this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import secrets
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ml_agent.plan import Plan

#: The repository files shipped into the sandbox (agent/, .claude/) and the shipped configs.
#: A built install (wheel, `pip install .`, pre-commit) has them under ml_agent/_bundle (see
#: setup.py), laid out like the repo; an editable install reads the checkout itself.
_PACKAGE_DIR = Path(__file__).resolve().parent
_BUNDLE_DIR = _PACKAGE_DIR / "_bundle"
ROOT = _BUNDLE_DIR if _BUNDLE_DIR.is_dir() else _PACKAGE_DIR.parent
AGENT_DIR = ROOT / "agent"
CLAUDE_DIR = ROOT / ".claude"
CONFIGS_DIR = ROOT / "configs"


def _load_protocol() -> ModuleType:
    name = "ml_agent_protocol"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, AGENT_DIR / "protocol.py")
    assert spec is not None and spec.loader is not None, "agent/protocol.py is missing"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


protocol = _load_protocol()


# -- Run id --------------------------------------------------------------------------------
RUN_ID_RE = re.compile(r"^\d{8}-\d{4}-[0-9a-f]{6}$")


def new_run_id(now: float | None = None) -> str:
    """Short, sortable, URL-safe: `20261126-0315-a1b2c3` (UTC minute + 24 random bits)."""
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def run_dir(data_mount: str, run_id: str) -> str:
    """The run folder inside the sandbox: `<data mount>/runs/<run id>`."""
    return f"{data_mount.rstrip('/')}/runs/{run_id}"


# -- Run tokens and the token store --------------------------------------------------------
TOKEN_PREFIX = "mla-run-"
TOKEN_PLACEHOLDER = "<run token>"


def mint_token() -> str:
    """A fresh random run token (shown once; the store keeps only its hash)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """What the token store keeps for one run token (under sha256(token))."""

    run_id: str
    expires_at: float  # unix seconds
    budget_usd: float | None = None
    revoked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


class TokenStore(Protocol):
    """sha256(token) -> TokenRecord. A modal.Dict on Modal, a dict in memory locally."""

    def get(self, token_hash: str) -> TokenRecord | None: ...
    def put(self, token_hash: str, record: TokenRecord) -> None: ...


class UsageSink(Protocol):
    """Where the proxy adds metered usage, per run; `ps` and result.json read it back."""

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        """Add `usage` to the run's totals and return the new totals."""
        ...

    def get(self, run_id: str) -> dict[str, float]: ...


# -- Run registry --------------------------------------------------------------------------
@dataclasses.dataclass
class RunRecord:
    """One entry of the run registry (`ps`): a modal.Dict on Modal, runs/<id>/run.json locally."""

    run_id: str
    backend: str
    app: str
    config: str  # the config file's path as the user gave it
    config_hash: str
    gpu: str | None
    status: str  # one of protocol.STATUSES
    created_at: float
    ended_at: float | None = None
    sandbox_id: str | None = None
    run_dir: str | None = None
    cost_usd: float | None = None  # the proxy's metering (so far, while the run lives)
    exit_code: int | None = None
    agent_cost_usd: float | None = None  # what the agent says it spent: a second opinion
    data_volume: str | None = None  # the data volume's name (run folders: <it>/runs/<run id>)
    trackio_volume: str | None = None  # the volume holding the trackio databases, if any
    sweep: str | None = None  # the sweep id that launched the run, if any
    # Local runs with sandbox.gpu: the GPUs its current leg holds, each {index, model, uuid,
    # bus, minor, shared} (ml_agent.backends.local.gpus). Empty on Modal and for CPU runs.
    gpus: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # One entry per sandbox the run has had (`up --resume` adds one), oldest first; the
    # fields above describe the run as a whole (status, ended_at and sandbox_id: its last
    # leg). Each leg: sandbox_id, started_at, ended_at, status. Empty in records written
    # before legs existed: such a run had one leg.
    legs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def launched(cls, plan: Plan, *, backend: str, config: str, now: float | None = None,
                 **fields: Any) -> RunRecord:
        """A new run's record from its launch plan: `starting`, its first leg open."""
        assert plan.launch is not None, "a plan from Plan.for_launch"
        now = time.time() if now is None else now
        record = cls(
            run_id=plan.launch.run_id, backend=backend, app=plan.app, config=config,
            config_hash=plan.config_hash, gpu=plan.sandbox.gpu, status="starting",
            created_at=now, run_dir=plan.launch.run_dir, data_volume=plan.data_volume.name,
            trackio_volume=plan.syncer.volume_name, sweep=plan.launch.sweep, **fields,
        )
        record.new_leg(now)
        return record

    def new_leg(self, now: float) -> None:
        """A new sandbox for this run starts: the run is `starting` again; the leg before
        keeps how it ended."""
        if self.legs:
            self.legs[-1].update(self._leg_end())
        elif self.status != "starting":  # a record from before legs: its one leg
            self.legs.append({"started_at": self.created_at, **self._leg_end()})
        self.legs.append({"sandbox_id": None, "started_at": now, "ended_at": None,
                          "status": "starting"})
        self.status, self.ended_at, self.sandbox_id, self.exit_code = "starting", None, None, None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored; its last leg gets the run's sandbox_id, status and ended_at
        (every registry write keeps the current leg up to date)."""
        data = dataclasses.asdict(self)
        if data["legs"]:
            data["legs"][-1].update(self._leg_end())
        return data

    def _leg_end(self) -> dict[str, Any]:
        return {"sandbox_id": self.sandbox_id, "status": self.status, "ended_at": self.ended_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def ml_agent_home() -> Path:
    """`$ML_AGENT_HOME`, default `~/.local/share/ml-agent` (local volumes, runs, secrets)."""
    env = os.environ.get("ML_AGENT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "ml-agent"
