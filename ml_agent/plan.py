"""The Plan: a pure, resolved, backend-neutral description of one launch (DESIGN.md).

Both backends consume only this. Built from a LaunchConfig by `build_plan` with no I/O
beyond reading the config's local files (for the content hash); `Plan.for_launch` adds the
per-launch parts, `launch_env` is the launcher -> agent environment (agent/protocol.py ENV).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ml_agent import contracts

if TYPE_CHECKING:
    from ml_agent.config.models import LaunchConfig


class _Frozen(BaseModel):
    # `copy` is serialized under its alias, so `plan --json` round-trips into the Plan.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)


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
    builder: str  # Modal's image builder version (config/types.py IMAGE_BUILDER_PYTHON)


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
    cpu: float | tuple[float, float] | None  # cores, or (request, limit)
    memory_mib: int | tuple[int, int] | None  # MiB, or (request, limit)
    region: tuple[str, ...] | None = None
    cloud: str | None = None
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
    # The secret whose ANTHROPIC_API_KEY the proxy sends upstream: `proxy.secret` for
    # api.anthropic.com, `proxy.upstream_secret` for any other upstream (never both).
    secret: str | None
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
    # The sweep that launches this run: recorded in the registry by the backend, and left
    # out of the plan's JSON (a run's plan is the same whether a sweep launched it or not).
    sweep: str | None = Field(default=None, exclude=True)
    # Local GPUs: share them with other sharing runs (`up --share-gpus`, a sweep's
    # `share_gpus`), instead of holding them alone. How this launch is scheduled, not what
    # runs: left out of the plan's JSON, like `sweep`.
    share_gpus: bool = Field(default=False, exclude=True)
    resume_session: str | None = None  # `up --resume`: the Claude session the run continues
    # Where the agent logs its metrics (ML_AGENT_TRACKIO_PROJECT / _RUN_NAME): a sweep's runs
    # share one project (the sweep id), each under its own run name (its label), so
    # trackio's dashboard compares them; None = the agent names them. A new leg of the run
    # (`up --resume`) keeps them.
    trackio_project: str | None = None
    trackio_run_name: str | None = None


#: Shown for the proxy URL in a plan: it is known only once the proxy is deployed/started.
PROXY_URL_PLACEHOLDER = "<proxy url>"


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
    # sha256 over the launch-relevant fields and the bytes of the local files/dirs; not the
    # config's path or the local paths (moving the checkout changes nothing), not `launch`.
    config_hash: str
    app_hash: str  # the deployed app's part (proxy + syncer): redeploy only when it changes
    launch: LaunchPlan | None = None

    @property
    def data_volume(self) -> VolumePlan:
        """The volume that holds the run folders (key `data`, required by the config)."""
        return next(v for v in self.volumes if v.key == "data")

    def for_launch(
        self, run_id: str, *, base_url: str = PROXY_URL_PLACEHOLDER, sweep: str | None = None,
        resume_session: str | None = None, share_gpus: bool = False,
        trackio_run_name: str | None = None,
    ) -> Plan:
        """This plan with its per-launch parts; the token is `contracts.TOKEN_PLACEHOLDER`.

        The launcher calls `launch_env(plan, base_url=..., token=...)` for the real env.
        `resume_session`: a resumed run's Claude session (`up --resume`). `share_gpus`:
        the run shares the machine's GPUs with other sharing runs (local backend). A run of
        `sweep` logs to trackio project `sweep` under `trackio_run_name`. A plan that was
        launched as `run_id` before (a resumed run) keeps its trackio names.
        """
        project, name = sweep, trackio_run_name
        before = self.launch
        if before is not None and before.run_id == run_id and sweep is None \
                and trackio_run_name is None:  # a new leg of the same run
            project, name = before.trackio_project, before.trackio_run_name
        launch = LaunchPlan(
            run_id=run_id, run_dir=contracts.run_dir(self.data_volume.mount, run_id), env={},
            sweep=sweep, resume_session=resume_session, share_gpus=share_gpus,
            trackio_project=project, trackio_run_name=name,
        )
        planned = self.model_copy(update={"launch": launch})
        env = _launcher_env(planned, base_url=base_url, token=contracts.TOKEN_PLACEHOLDER)
        return self.model_copy(update={"launch": launch.model_copy(update={"env": env})})


# -- building ------------------------------------------------------------------------------


def build_plan(config: LaunchConfig, config_path: str | os.PathLike[str]) -> Plan:
    """The run-independent Plan of a validated config (reads only its local files)."""
    from ml_agent.config.models import BUILD_KINDS, is_anthropic, layer_kind

    raw = config.image.layers
    kinds = [layer_kind(layer) for layer in raw]
    layers: list[Any] = []
    for i, (kind, layer) in enumerate(zip(kinds, raw, strict=True)):
        spec = getattr(layer, kind)
        if kind in ("apt", "pip"):
            layers.append({"kind": kind, "packages": tuple(spec)})
        elif kind == "env":
            layers.append({"kind": "env", "env": dict(spec)})
        elif kind == "run":
            layers.append({"kind": "run", "commands": tuple(spec)})
        else:  # Modal: a build step after add_local_* needs copy=True
            copy = any(k in BUILD_KINDS for k in kinds[i + 1 :])
            layers.append({"kind": kind, "src": spec.src, "dest": spec.dest, "copy": copy})
    volumes = [VolumePlan(key=key, **vol.model_dump()) for key, vol in config.volumes.items()]
    sb = config.sandbox
    proxy = config.proxy
    syncer = config.syncer
    synced = config.volumes.get(syncer.volume) if syncer.volume else None
    path = Path(config_path).resolve()
    data: dict[str, Any] = {
        "app": config.app,
        "backend": config.backend,
        "config_path": str(path),
        "config_name": path.stem,
        "image": {
            "python": config.image.python,
            "layers": layers,
            "builder": config.image.builder,
        },
        "volumes": volumes,
        "sandbox": {
            "gpu": str(sb.gpu) if sb.gpu else None,
            "timeout_s": sb.timeout,
            "idle_timeout_s": sb.idle_timeout,
            "workdir": sb.workdir,
            "cpu": sb.cpu,
            "memory_mib": sb.memory,
            "region": sb.region,
            "cloud": sb.cloud,
            "env": dict(sb.env),
            "secrets": tuple(sb.secrets),
            "network": {"mode": sb.network.mode, "domains": tuple(sb.network.allowlist)},
        },
        "agent": config.agent.model_dump(),
        "proxy": {
            "enabled": proxy.enabled,
            "secret": proxy.secret if is_anthropic(proxy.upstream) else proxy.upstream_secret,
            "upstream": proxy.upstream,
            "budget_usd": proxy.budget_usd,
            "allowed_paths": tuple(proxy.allowed_paths),
        },
        "syncer": {
            "enabled": syncer.enabled,
            "volume": syncer.volume,
            "volume_name": synced.name if synced else None,
            "mount": synced.mount if synced else None,
            "namespace": syncer.namespace,
            "space_id": syncer.space_id,
            "secret": syncer.secret,
            "private": syncer.private,
            "interval_s": float(syncer.interval),
        },
        "config_hash": "",
        "app_hash": "",
    }
    plan = Plan.model_validate(data)
    return plan.model_copy(update={"config_hash": config_hash(plan), "app_hash": app_hash(plan)})


# -- hashes --------------------------------------------------------------------------------

#: Never part of a launch: caches Python writes next to the sources.
_IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store"})


def _digest_path(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative names, kinds and file bytes."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_NAMES)
        rel_root = Path(root).relative_to(path)
        for name in sorted(files):
            if name in _IGNORED_NAMES or name.endswith(".pyc"):
                continue
            full = Path(root, name)
            h.update(f"{(rel_root / name).as_posix()}\0".encode())
            if full.is_symlink():
                h.update(b"link\0" + os.readlink(full).encode())
            elif full.is_file():
                h.update(full.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def config_hash(plan: Plan) -> str:
    """Changes exactly when the launch would differ: fields and local file contents."""
    data = plan.model_dump(
        mode="json", exclude={"config_path", "config_name", "config_hash", "app_hash", "launch"}
    )
    data["volumes"].sort(key=lambda v: v["key"])  # a mapping in the config: order is no change
    for layer in data["image"]["layers"]:
        if layer["kind"] in ("file", "dir"):
            layer["src"] = _digest_path(Path(layer["src"]))
    return hashlib.sha256(_canonical(data)).hexdigest()


def image_hash(plan: Plan) -> str:
    """The image's part: its layers, with the bytes of their local files and folders."""
    data = plan.model_dump(mode="json", include={"image"})
    for layer in data["image"]["layers"]:
        if layer["kind"] in ("file", "dir"):
            layer["src"] = _digest_path(Path(layer["src"]))
    return hashlib.sha256(_canonical(data)).hexdigest()


def app_hash(plan: Plan) -> str:
    """The deployed part (app name, proxy, syncer): the backend redeploys when it changes."""
    data = plan.model_dump(mode="json", include={"app", "backend", "proxy", "syncer"})
    return hashlib.sha256(_canonical(data)).hexdigest()


# -- the launcher -> agent environment -----------------------------------------------------


def _launcher_env(plan: Plan, *, base_url: str, token: str) -> dict[str, str]:
    launch = plan.launch
    if launch is None:
        raise ValueError("launch_env needs a plan from Plan.for_launch(run_id)")
    agent = plan.agent
    budget = plan.proxy.budget_usd
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": token,
        "ML_AGENT_RUN_ID": launch.run_id,
        "ML_AGENT_RUN_DIR": launch.run_dir,
        "ML_AGENT_MODEL": agent.model,
        "ML_AGENT_MAX_TURNS": str(agent.max_turns),
        "ML_AGENT_ALLOWED_TOOLS": ",".join(agent.allowed_tools),
        "ML_AGENT_PERMISSION_MODE": agent.permission_mode,
        "ML_AGENT_BUDGET_USD": "" if budget is None else f"{budget:g}",
        "ML_AGENT_SYSTEM_PROMPT": agent.system_prompt_append or "",
        "ML_AGENT_HF_NAMESPACE": (plan.syncer.namespace or "") if plan.syncer.enabled else "",
        "ML_AGENT_CONFIG_HASH": plan.config_hash,
        "CLAUDE_CONFIG_DIR": f"{launch.run_dir}/claude",
        "ML_AGENT_RESUME_SESSION": launch.resume_session or "",
        "ML_AGENT_TRACKIO_PROJECT": launch.trackio_project or "",
        "ML_AGENT_TRACKIO_RUN_NAME": launch.trackio_run_name or "",
    }
    assert env.keys() == contracts.protocol.ENV.keys(), "plan.py and agent/protocol.py ENV differ"
    return env


def launch_env(plan: Plan, *, base_url: str, token: str) -> dict[str, str]:
    """The sandbox env: the config's `sandbox.env` plus every key of protocol.ENV.

    `plan` must come from `Plan.for_launch` (run id and run folder). The config cannot set
    a launcher key (validation refuses it), so nothing here is overridden silently.
    """
    return {**plan.sandbox.env, **_launcher_env(plan, base_url=base_url, token=token)}


# -- worst-case cost (an estimate) ---------------------------------------------------------

#: Modal list prices in USD per hour, as published on modal.com/pricing (seen 2026-05);
#: per GPU. An estimate: regions, non-preemptible and plan multipliers are not included.
PRICES_AS_OF = "2026-05"
GPU_USD_PER_HOUR: dict[str, float] = {
    "T4": 0.59,
    "L4": 0.80,
    "A10": 1.10,
    "L40S": 1.95,
    "A100": 2.10,
    "A100-40GB": 2.10,
    "A100-80GB": 2.50,
    "RTX-PRO-6000": 3.03,
    "H100": 3.95,
    "H100!": 3.95,
    "H200": 4.54,
    "B200": 6.25,
    "B200+": 6.25,
}
SANDBOX_CPU_USD_PER_CORE_HOUR = 0.142  # sandboxes bill CPU at 3x the function rate
MEMORY_USD_PER_GIB_HOUR = 0.024
DEFAULT_CPU = 0.125  # Modal's default reservation when cpu is not set
DEFAULT_MEMORY_MIB = 128


def _most(value: float | tuple[float, float] | None) -> float | None:
    """A reservation's worst case: its limit when it has one (Modal bills usage up to it)."""
    return value[1] if isinstance(value, tuple) else value


def worst_case_cost(plan: Plan) -> dict[str, float]:
    """USD if the sandbox lives its whole timeout and the agent spends its whole budget.

    Keys: gpu, cpu, memory, api, total. Local runs cost only the API budget.
    """
    hours = plan.sandbox.timeout_s / 3600
    gpu = cpu = memory = 0.0
    if plan.backend == "modal":
        if plan.sandbox.gpu:
            name, _, count = plan.sandbox.gpu.partition(":")
            gpu = GPU_USD_PER_HOUR[name] * int(count or 1) * hours
        cpu = (_most(plan.sandbox.cpu) or DEFAULT_CPU) * SANDBOX_CPU_USD_PER_CORE_HOUR * hours
        mem_gib = (_most(plan.sandbox.memory_mib) or DEFAULT_MEMORY_MIB) / 1024
        memory = mem_gib * MEMORY_USD_PER_GIB_HOUR * hours
    api = plan.proxy.budget_usd or 0.0
    parts = {"gpu": gpu, "cpu": cpu, "memory": memory, "api": api}
    return {**{k: round(v, 2) for k, v in parts.items()}, "total": round(sum(parts.values()), 2)}
