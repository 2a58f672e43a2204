"""The syncer's settings, and their trip through the environment to a Modal function.

A Modal function is an importable global with no YAML: the backend that registers it
puts `SyncerSettings.to_env()` in the function's env, and the function calls `from_env()`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_agent.plan import SyncerPlan

ENV_PREFIX = "ML_AGENT_SYNCER_"


@dataclass(frozen=True)
class SyncerSettings:
    """Everything a syncer process needs besides its HF token (HF_TOKEN, from its secret)."""

    trackio_dir: str  # where this process sees the trackio volume
    namespace: str | None = None  # the only HF account the agent's space_id file may name
    space_id: str | None = None  # the config's Space; overrides the space_id file
    private: bool = True
    interval_s: float = 30.0
    idle_stop_s: float = 900.0  # run_forever: stop after this long with no change, 0 = never
    max_runtime_s: float = 0.0  # run_forever: stop after this long, 0 = no limit
    backoff_base_s: float = 5.0
    backoff_max_s: float = 300.0
    upload_timeout_s: float = 1200.0
    state_path: str | None = None  # a private JSON file remembering uploads (not the volume)

    @classmethod
    def from_plan(cls, plan: SyncerPlan, *, trackio_dir: str | None = None,
                  **overrides: object) -> SyncerSettings:
        """From the Plan's resolved syncer; `trackio_dir` defaults to the volume's mount."""
        where = trackio_dir or plan.mount
        if not where:
            raise ValueError("the syncer needs a trackio folder (syncer.volume is not set)")
        return cls(
            trackio_dir=where,
            namespace=plan.namespace,
            space_id=plan.space_id,
            private=plan.private,
            interval_s=plan.interval_s,
            **overrides,  # type: ignore[arg-type]
        )

    def to_env(self) -> dict[str, str]:
        """`ML_AGENT_SYNCER_<FIELD>` strings; None fields are left out."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[ENV_PREFIX + f.name.upper()] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SyncerSettings:
        """Read what `to_env` wrote; raises ValueError naming a missing or bad variable."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw == "":
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"{key} is not set (the syncer's trackio folder)")
                continue
            if f.type in ("bool", bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(f"{key} must be 1 or 0 (got {raw!r})")
                values[f.name] = raw.lower() in ("1", "true", "yes")
            elif f.type in ("float", float):
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise ValueError(f"{key} must be a number of seconds (got {raw!r})") from None
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
