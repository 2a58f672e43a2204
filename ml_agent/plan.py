"""The Plan: a pure, resolved, backend-neutral description of one launch (DESIGN.md).

Both backends consume only this. Built from a LaunchConfig by `build_plan` with no I/O
beyond reading the config's local files; `Plan.for_launch` adds the per-launch parts.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AptLayer(_Frozen):
    kind: Literal["apt"] = "apt"
    packages: tuple[str, ...]


class PipLayer(_Frozen):
    kind: Literal["pip"] = "pip"
    packages: tuple[str, ...]


class EnvLayer(_Frozen):
    kind: Literal["env"] = "env"
    env: dict[str, str]


class RunLayer(_Frozen):
    kind: Literal["run"] = "run"
    commands: tuple[str, ...]


class FileLayer(_Frozen):
    kind: Literal["file"] = "file"
    src: str  # absolute local path
    dest: str  # absolute path in the sandbox
    copy_: bool = Field(alias="copy")  # True when a build step follows (Modal: copy=True)


class DirLayer(_Frozen):
    kind: Literal["dir"] = "dir"
    src: str
    dest: str
    copy_: bool = Field(alias="copy")


Layer = Annotated[
    AptLayer | PipLayer | EnvLayer | RunLayer | FileLayer | DirLayer, Field(discriminator="kind")
]


class ImagePlan(_Frozen):
    python: str
    layers: tuple[Layer, ...]


class VolumePlan(_Frozen):
    key: str  # the logical key in the config (data, trackio, ...)
    name: str  # the Modal volume name (local: $ML_AGENT_HOME/volumes/<name>)
    mount: str
    create_if_missing: bool
    read_only: bool


class NetworkPlan(_Frozen):
    mode: Literal["open", "blocked", "allowlist"]
    domains: tuple[str, ...] = ()


class SandboxPlan(_Frozen):
    gpu: str | None  # Modal's GPU string, e.g. "A10" or "H100:2"; None = CPU
    timeout_s: int
    idle_timeout_s: int | None
    workdir: str | None
    cpu: float | None
    memory_mib: int | None
    env: dict[str, str]  # from the config (sandbox.env and env layers are separate)
    secrets: tuple[str, ...]
    network: NetworkPlan


class AgentPlan(_Frozen):
    entrypoint: str
    model: str
    max_turns: int
    allowed_tools: tuple[str, ...]
    permission_mode: str
    system_prompt_append: str | None


class ProxyPlan(_Frozen):
    enabled: bool
    secret: str | None  # holds ANTHROPIC_API_KEY (or the upstream's key)
    upstream: str
    budget_usd: float | None
    allowed_paths: tuple[str, ...]  # "METHOD /path"


class SyncerPlan(_Frozen):
    enabled: bool
    volume: str | None  # the volume key
    volume_name: str | None
    mount: str | None
    namespace: str | None
    space_id: str | None
    secret: str | None
    private: bool
    interval_s: float


class LaunchPlan(_Frozen):
    """The per-launch parts the launcher adds: the token is a placeholder until `up`."""

    run_id: str
    run_dir: str
    env: dict[str, str]  # the launcher -> agent env (contracts.protocol.ENV), token masked


class Plan(_Frozen):
    app: str
    backend: Literal["modal", "local"]
    config_path: str  # absolute
    config_name: str  # the file's stem, e.g. "a10"
    image: ImagePlan
    volumes: tuple[VolumePlan, ...]
    sandbox: SandboxPlan
    agent: AgentPlan
    proxy: ProxyPlan
    syncer: SyncerPlan
    config_hash: str  # changes exactly when the launch would differ
    app_hash: str  # the deployed app's part (proxy + syncer): redeploy only when it changes
    launch: LaunchPlan | None = None
