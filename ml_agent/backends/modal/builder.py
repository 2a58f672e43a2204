"""Plan -> modal objects and `Sandbox.create` arguments: a pure translation, no network.

Every function here builds modal handles (Image chains, Volume/Secret references) that are
resolved only when the backend hands them to the SDK, so they are unit-tested offline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ml_agent.config.types import modal_tag
from ml_agent.contracts import protocol
from ml_agent.errors import BackendError
from ml_agent.plan import (
    AptLayer,
    DirLayer,
    EnvLayer,
    FileLayer,
    ImagePlan,
    Layer,
    PipLayer,
    Plan,
    RunLayer,
    VolumePlan,
)

if TYPE_CHECKING:
    import modal

#: The config hash as a sandbox tag: a prefix (the full sha256 is 64 characters, one over
#: Modal's tag limit); the run registry keeps the full hash.
CONFIG_HASH_TAG_LEN = 32


@dataclasses.dataclass(frozen=True)
class Step:
    """One image layer as a modal.Image method call; `label` names it in progress and errors."""

    label: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def describe_layer(index: int, layer: Layer) -> str:
    """`layer 2 (pip: torch, trackio)`: how progress and build errors name a layer."""
    if isinstance(layer, AptLayer | PipLayer):
        what = ", ".join(layer.packages)
    elif isinstance(layer, EnvLayer):
        what = ", ".join(layer.env)
    elif isinstance(layer, RunLayer):
        what = "; ".join(layer.commands)
    else:
        what = f"{layer.src} -> {layer.dest}"
    if len(what) > 60:
        what = what[:57] + "..."
    return f"layer {index} ({layer.kind}: {what})"


def image_steps(image: ImagePlan) -> list[Step]:
    """The Plan's layers, in order, as calls on `modal.Image.debian_slim(python_version=...)`."""
    steps = []
    for index, layer in enumerate(image.layers, start=1):
        label = describe_layer(index, layer)
        if isinstance(layer, AptLayer):
            steps.append(Step(label, "apt_install", tuple(layer.packages), {}))
        elif isinstance(layer, PipLayer):
            # uv resolves and installs several times faster than pip on Modal's builders.
            steps.append(Step(label, "uv_pip_install", tuple(layer.packages), {}))
        elif isinstance(layer, EnvLayer):
            steps.append(Step(label, "env", (dict(layer.env),), {}))
        elif isinstance(layer, RunLayer):
            steps.append(Step(label, "run_commands", tuple(layer.commands), {}))
        elif isinstance(layer, FileLayer | DirLayer):
            # copy=False mounts at sandbox start; copy=True (a build step follows) bakes it in.
            method = "add_local_file" if isinstance(layer, FileLayer) else "add_local_dir"
            steps.append(Step(label, method, (layer.src, layer.dest), {"copy": layer.copy_}))
        else:  # pragma: no cover - the Plan's union is closed
            raise AssertionError(f"unknown layer {layer!r}")
    return steps


def build_image(image: ImagePlan) -> list[tuple[str, modal.Image]]:
    """The image after each step, base first: `[("base (debian_slim, python 3.11)", img), ...]`.

    The last entry is the sandbox's image. The backend builds them in order so that progress
    names the layer being built and a failure names the layer that broke.
    """
    import modal

    current = modal.Image.debian_slim(python_version=image.python)
    chain = [(f"base (debian_slim, python {image.python})", current)]
    for step in image_steps(image):
        current = getattr(current, step.method)(*step.args, **step.kwargs)
        chain.append((step.label, current))
    return chain


def volume(plan: VolumePlan) -> modal.Volume:
    import modal

    handle = modal.Volume.from_name(plan.name, create_if_missing=plan.create_if_missing)
    return handle.with_mount_options(read_only=True) if plan.read_only else handle


def secrets(names: tuple[str, ...] | list[str]) -> list[modal.Secret]:
    import modal

    return [modal.Secret.from_name(name) for name in names]


def agent_command(plan: Plan, task: str | None) -> tuple[str, ...]:
    """The sandbox's own command: the agent (so its stdout/stdin are the sandbox's).

    A one-shot task goes to its stdin (the backend writes it), never into argv: modal caps
    the command's arguments at 64 KiB (`ARG_MAX_BYTES`).
    """
    return tuple(protocol.agent_command(plan.agent.entrypoint, one_shot=task is not None))


def network_kwargs(plan: Plan, proxy_url: str | None) -> dict[str, Any]:
    """`Sandbox.create`'s network arguments. An allow-list always admits the agent's proxy."""
    network = plan.sandbox.network
    if network.mode == "open":
        return {}
    if network.mode == "blocked":
        if plan.proxy.enabled:
            raise BackendError(
                "sandbox.network is 'blocked', but the agent must reach its proxy: use "
                "'allowlist' with the domains the agent needs (the proxy is added for you)"
            )
        return {"block_network": True}
    domains = list(network.domains)
    if proxy_url:
        host = urlsplit(proxy_url).hostname
        if host and host not in domains:
            domains.append(host)
    if not domains:
        raise BackendError("sandbox.network is 'allowlist' but names no domain")
    return {"outbound_domain_allowlist": domains}


def sandbox_tags(plan: Plan) -> dict[str, str]:
    assert plan.launch is not None, "the Plan needs its LaunchPlan (Plan.for_launch) first"
    # Modal's tag values are at most 63 characters of [A-Za-z0-9._-] (the server checks).
    return {
        "ml-agent-run": plan.launch.run_id,
        "ml-agent-config": modal_tag(plan.config_name),
        "ml-agent-config-hash": plan.config_hash[:CONFIG_HASH_TAG_LEN],
    }


def sandbox_name(plan: Plan) -> str:
    """Unique within the app, so `Sandbox.from_name(app, name)` finds a run's sandbox."""
    assert plan.launch is not None
    return f"run-{plan.launch.run_id}"


@dataclasses.dataclass(frozen=True)
class Ref:
    """A modal object among `Sandbox.create`'s arguments: `up` makes it, `plan` prints it.

    kind: app, image, env, secret (name: the secret's) or volume (name: the volume key).
    """

    kind: str
    name: str = ""

    @property
    def source(self) -> str:
        """How `ml-agent plan` prints it (the names its listing gives the objects)."""
        if self.kind == "secret":
            return f'modal.Secret.from_name("{self.name}")'
        if self.kind == "volume":
            return volume_variable(self.name)
        return {"env": "{...}"}.get(self.kind, self.kind)


def volume_variable(key: str) -> str:
    """The Python name `ml-agent plan` gives the volume of config key `key`."""
    return f"vol_{key.replace('-', '_')}"


def sandbox_create_spec(
    plan: Plan, *, task: str | None = None, proxy_url: str | None = None
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """`Sandbox.create`'s arguments with its modal objects as `Ref`s: the one description
    that `up` resolves (`sandbox_create_args`) and that `ml-agent plan` prints."""
    sandbox = plan.sandbox
    kwargs: dict[str, Any] = {
        "app": Ref("app"),
        "image": Ref("image"),
        "name": sandbox_name(plan),
        "tags": sandbox_tags(plan),
        "env": Ref("env"),
        "secrets": [Ref("secret", name) for name in sandbox.secrets],
        "volumes": {v.mount: Ref("volume", v.key) for v in plan.volumes},
        "timeout": sandbox.timeout_s,
        "gpu": sandbox.gpu,
    }
    if sandbox.workdir is not None:
        kwargs["workdir"] = sandbox.workdir
    if sandbox.idle_timeout_s is not None:
        kwargs["idle_timeout"] = sandbox.idle_timeout_s
    if sandbox.cpu is not None:
        kwargs["cpu"] = sandbox.cpu
    if sandbox.memory_mib is not None:
        kwargs["memory"] = sandbox.memory_mib
    if sandbox.region is not None:
        kwargs["region"] = list(sandbox.region)
    if sandbox.cloud is not None:
        kwargs["cloud"] = sandbox.cloud
    kwargs.update(network_kwargs(plan, proxy_url))
    return agent_command(plan, task), kwargs


def sandbox_create_args(
    plan: Plan,
    *,
    app: modal.App,
    image: modal.Image,
    env: Mapping[str, str],
    task: str | None = None,
    proxy_url: str | None = None,
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """`(args, kwargs)` for `modal.Sandbox.create(*args, **kwargs)`: the spec, resolved.

    `env` is the complete launcher -> agent env (config env + launcher env, real run token);
    it reaches the sandbox as an ephemeral Secret, never as a command-line argument.
    """
    by_key = {v.key: v for v in plan.volumes}

    def resolve(value: Any) -> Any:
        if isinstance(value, Ref):
            if value.kind == "secret":
                return secrets([value.name])[0]
            if value.kind == "volume":
                return volume(by_key[value.name])
            return {"app": app, "image": image, "env": dict(env)}[value.kind]
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    args, kwargs = sandbox_create_spec(plan, task=task, proxy_url=proxy_url)
    return args, {k: resolve(v) for k, v in kwargs.items()}
