"""The config language as strict pydantic models: LaunchConfig and its sections.

The field descriptions are the documentation and the JSON Schema (`ml-agent schema`).

Errors and their `loc`: every rule raises at the key it is about. Rules on one value are
field validators (ValueError; pydantic prefixes the message with "Value error, "). Rules
across fields are model validators that raise a `ValidationError` built by `_fail`, whose
line errors carry their own `loc` relative to the model (pydantic prefixes the model's
path), so `syncer.volume: unknown volume key 'trackoi'` points at `syncer.volume`.
Cross-field rules run only when every field of their model is valid.

Validation context: `{"base_dir": Path}`, the folder of the config file. File and dir layer
`src` paths (LocalPath fields) resolve against the folder of the file that wrote them: the
loader hands them in as LocalRef values (`origins.anchor`); a plain string resolves
against `base_dir` (default: the current directory).
"""

# No `from __future__ import annotations` here: pydantic would have to eval every field's
# annotation string when it builds the models, which is start-up time of every `validate`.
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from ml_agent.config.types import (
    APP_NAME_MAX,
    DEFAULT_IMAGE_BUILDER,
    AbsPath,
    AppName,
    Cloud,
    CpuSpec,
    Domain,
    Duration,
    EnvName,
    EnvValue,
    GpuSpec,
    ImageBuilder,
    Key,
    LocalPath,
    MemorySpec,
    ModalName,
    MountPath,
    PythonVersion,
    Regions,
    did_you_mean,
    format_duration,
    python_for_builder,
)

ANTHROPIC_UPSTREAM = "https://api.anthropic.com"
DEFAULT_ALLOWED_PATHS = ("POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1/models")
PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
#: The volume that holds the run folders: `<its mount>/runs/<run id>`.
DATA_VOLUME = "data"
MAX_TIMEOUT_S = 24 * 3600
MIN_TIMEOUT_S = 10

Loc = tuple[str | int, ...]


def _fail(title: str, errors: list[tuple[Loc, str, Any]]) -> None:
    """Raise every (loc, message, input) at once, each at its own loc (see module doc)."""
    if errors:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", "{message}", {"message": msg}),
                    loc=loc,
                    input=value,
                )
                for loc, msg, value in errors
            ],
        )


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable.

    A typo'd key (`gpus:` for `gpu:`) must be an error, not a silently ignored setting
    that falls back to a default and launches something the user did not ask for; and a
    validated config must not change afterwards, so the Plan built from it is what
    validation saw.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


def _nonempty(value: list | dict, what: str) -> Any:
    if not value:
        raise ValueError(f"an empty {what} does nothing; add items or remove it")
    return value


# -- image ---------------------------------------------------------------------------------


class AptLayer(Strict):
    apt: Annotated[list[str], Field(description="Debian packages to apt-get install.")]

    @field_validator("apt")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or any(c.isspace() for c in item.strip()):
                words = ", ".join(item.split()) or "git"
                raise ValueError(f"one package per item (got {item!r}); write [{words}]")
            if item.startswith("-"):
                raise ValueError(f"package names only, no apt options (got {item!r})")
        return _nonempty(value, "apt layer")


class PipLayer(Strict):
    pip: Annotated[
        list[str],
        Field(description="pip requirement specifiers, pinned for reproducible images."),
    ]

    @field_validator("pip")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip():
                raise ValueError("empty pip requirement; remove it")
            if item.startswith("-"):
                raise ValueError(f"requirements only, no pip options (got {item!r})")
        return _nonempty(value, "pip layer")


class EnvLayer(Strict):
    env: Annotated[
        dict[EnvName, EnvValue],
        Field(description="Environment variables baked into the image (ENV)."),
    ]

    @field_validator("env")
    @classmethod
    def _some(cls, value: dict[str, str]) -> dict[str, str]:
        return _nonempty(value, "env layer")


class RunLayer(Strict):
    run: Annotated[
        list[str], Field(description="Shell commands run at image build time, in order.")
    ]

    @field_validator("run")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if any(not c.strip() for c in value):
            raise ValueError("empty command; remove it")
        return _nonempty(value, "run layer")


class LocalFile(Strict):
    src: Annotated[
        str,
        LocalPath(want_dir=False),
        Field(description="Local file, relative to this config file's folder."),
    ]
    dest: Annotated[AbsPath, Field(description="Absolute path in the sandbox.")]


class LocalDir(Strict):
    src: Annotated[
        str,
        LocalPath(want_dir=True),
        Field(description="Local folder, relative to this config file's folder."),
    ]
    dest: Annotated[AbsPath, Field(description="Absolute folder path in the sandbox.")]


class FileLayer(Strict):
    file: Annotated[LocalFile, Field(description="Add one local file to the image.")]


class DirLayer(Strict):
    dir: Annotated[LocalDir, Field(description="Add a local folder to the image.")]


LAYER_KINDS: dict[str, type[Strict]] = {
    "apt": AptLayer,
    "pip": PipLayer,
    "env": EnvLayer,
    "run": RunLayer,
    "file": FileLayer,
    "dir": DirLayer,
}
#: Layers that run a build step (Modal: any add_local_* before one of these needs copy=True).
BUILD_KINDS = frozenset({"apt", "pip", "env", "run"})


def _dispatch_layer(value: Any, handler: Any, info: ValidationInfo) -> Any:
    """Validate a layer by its one key, so errors point at `layers.N.<key>...`."""
    if isinstance(value, tuple(LAYER_KINDS.values())):
        return value
    kinds = ", ".join(LAYER_KINDS)
    if not isinstance(value, dict):
        raise ValueError(f"a layer is a mapping with one of {kinds}; e.g. - apt: [git]")
    if len(value) != 1:
        keys = ", ".join(map(str, value)) or "none"
        raise ValueError(
            f"a layer has exactly one of {kinds} (got {keys}); write each as its own list item"
        )
    key = next(iter(value))
    if key not in LAYER_KINDS:
        hint = did_you_mean(str(key), list(LAYER_KINDS)) or f"; use one of {kinds}"
        raise ValueError(f"unknown layer kind {key!r}{hint}")
    return LAYER_KINDS[key].model_validate(value, context=info.context)


Layer = Annotated[
    AptLayer | PipLayer | EnvLayer | RunLayer | FileLayer | DirLayer,
    WrapValidator(_dispatch_layer),
]


def layer_kind(layer: Strict) -> str:
    return next(iter(type(layer).model_fields))


class ImageConfig(Strict):
    """The sandbox image: Debian slim with a Python version, then layers in order."""

    python: Annotated[
        PythonVersion,
        Field(
            description=(
                'Python version of the Debian slim image, quoted: "3.11". On Modal, one the '
                "image builder version builds (2026.10: 3.11 to 3.15; 2025.06: 3.10 to 3.15)."
            )
        ),
    ] = "3.11"
    builder: Annotated[
        ImageBuilder,
        Field(
            description=(
                "Modal's image builder version, used whatever your workspace is set to; it "
                f"decides the Python versions on offer. Default {DEFAULT_IMAGE_BUILDER} "
                "(Modal's newest)."
            )
        ),
    ] = DEFAULT_IMAGE_BUILDER
    layers: Annotated[
        list[Layer],
        Field(
            description=(
                "Build steps applied in order; each item has exactly one of apt, pip, env, "
                "run, file, dir."
            )
        ),
    ] = []


# -- volumes -------------------------------------------------------------------------------


class VolumeConfig(Strict):
    """A Modal volume (locally: a folder under $ML_AGENT_HOME/volumes) mounted in the sandbox."""

    name: Annotated[ModalName, Field(description="The Modal volume name.")]
    mount: Annotated[
        MountPath,
        Field(description="Where it is mounted: absolute, canonical, not /, /root or /tmp."),
    ]
    create_if_missing: Annotated[
        bool, Field(description="Create the volume at launch when it does not exist.")
    ] = True
    read_only: Annotated[bool, Field(description="Mount it read-only in the sandbox.")] = False


# -- sandbox -------------------------------------------------------------------------------


class NetworkConfig(Strict):
    """Outbound network of the sandbox: `open`, `blocked`, or `{allowlist: [domains]}`."""

    mode: Annotated[
        Literal["open", "blocked", "allowlist"],
        Field(description="allowlist (only the listed domains; default here), open or blocked."),
    ] = "allowlist"
    allowlist: Annotated[
        list[Domain],
        Field(description="Domains the sandbox may reach (`*.example.com` allowed)."),
    ] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode == "blocked" and self.allowlist:
            _fail(
                "NetworkConfig",
                [
                    (
                        ("allowlist",),
                        "network: blocked cannot have an allowlist (Modal refuses both); "
                        "remove the allowlist, or use mode: allowlist",
                        self.allowlist,
                    )
                ],
            )
        if self.mode == "open" and self.allowlist:
            _fail(
                "NetworkConfig",
                [
                    (
                        ("allowlist",),
                        "network: open allows every domain; remove the allowlist "
                        "or use mode: allowlist",
                        self.allowlist,
                    )
                ],
            )
        if self.mode == "allowlist" and not self.allowlist:
            _fail(
                "NetworkConfig",
                [
                    (
                        ("allowlist",),
                        "an empty allowlist blocks everything; add domains or "
                        "write network: blocked",
                        self.allowlist,
                    )
                ],
            )
        return self


def _network_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        if value in ("open", "blocked"):
            return {"mode": value}
        hint = did_you_mean(value, ["open", "blocked"])
        raise ValueError(
            f"network is 'open', 'blocked' or {{allowlist: [domains]}} (got {value!r}){hint}"
        )
    return value


def _check_duration(value: int, *, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ValueError(
            f"{what} must be between {format_duration(low)} and {format_duration(high)} "
            f"(got {format_duration(value) if value > 0 else value})"
        )
    return value


class SandboxConfig(Strict):
    """The sandbox the agent runs in: resources, lifetime, env, secrets, network."""

    gpu: Annotated[
        GpuSpec | None,
        Field(
            description=(
                "Modal GPU type, optionally ':N' (A10 up to 4, others up to 8): T4, L4, A10 "
                "(A10G), L40S, A100, A100-40GB, A100-80GB, RTX-PRO-6000, H100, H100!, H200, "
                "B200, B200+. null = CPU only."
            )
        ),
    ] = None
    timeout: Annotated[
        Duration,
        Field(description="Longest the sandbox lives: 10s to 24h, e.g. 1h, 90m, 3600."),
    ] = 3600
    idle_timeout: Annotated[
        Duration | None,
        Field(description="Stop the sandbox after this long without activity (null = never)."),
    ] = None
    workdir: Annotated[
        AbsPath | None, Field(description="Working directory of the agent in the sandbox.")
    ] = None
    cpu: Annotated[
        CpuSpec | None,
        Field(
            description=(
                "CPU cores to reserve (fractional allowed), or [request, limit], e.g. [1, 4]."
            )
        ),
    ] = None
    memory: Annotated[
        MemorySpec | None,
        Field(
            description=(
                "Memory to reserve: 16GiB, 512MiB, or MiB; or [request, limit], e.g. "
                "['8GiB', '16GiB']."
            )
        ),
    ] = None
    region: Annotated[
        Regions | None,
        Field(description="Modal region(s) to run the sandbox in, e.g. us-east; null = any."),
    ] = None
    cloud: Annotated[
        Cloud | None,
        Field(description="Cloud provider: aws, gcp, oci or auto; null = Modal's choice."),
    ] = None
    env: Annotated[
        dict[EnvName, EnvValue],
        Field(description="Environment variables of the sandbox (values are strings)."),
    ] = {}
    secrets: Annotated[
        list[ModalName],
        Field(
            description=(
                "Modal secrets mounted into the sandbox as env vars. The agent can read "
                "them (it can run `env`): name only what it needs."
            )
        ),
    ] = []
    network: Annotated[
        Annotated[NetworkConfig, WrapValidator(lambda v, h: h(_network_shorthand(v)))],
        Field(description="Outbound network: open, blocked, or {allowlist: [domains]}."),
    ] = NetworkConfig(mode="open")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: int) -> int:
        return _check_duration(value, low=MIN_TIMEOUT_S, high=MAX_TIMEOUT_S, what="timeout")

    @field_validator("idle_timeout")
    @classmethod
    def _idle(cls, value: int | None) -> int | None:
        if value is None:
            return None
        return _check_duration(value, low=MIN_TIMEOUT_S, high=MAX_TIMEOUT_S, what="idle_timeout")

    @field_validator("secrets")
    @classmethod
    def _unique_secrets(cls, value: list[str]) -> list[str]:
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise ValueError(f"secret {dupes[0]!r} is listed twice; list each secret once")
        return value

    @model_validator(mode="after")
    def _launcher_env(self) -> Self:
        from ml_agent.contracts import protocol  # stdlib-only; loaded once

        _fail(
            "SandboxConfig",
            [
                (
                    ("env", name),
                    f"{name} is set by the launcher ({protocol.ENV[name]}); remove it here",
                    value,
                )
                for name, value in self.env.items()
                if name in protocol.ENV
            ],
        )
        return self


# -- agent, proxy, syncer ------------------------------------------------------------------


class AgentConfig(Strict):
    """How the agent inside the sandbox runs (reaches it through the launcher's env)."""

    entrypoint: Annotated[
        AbsPath, Field(description="The agent program in the sandbox (a file layer puts it).")
    ] = "/agent/agent.py"
    model: Annotated[str, Field(description="Claude model the agent uses.", min_length=1)] = (
        "claude-sonnet-4-5"
    )
    max_turns: Annotated[int, Field(description="Most agent turns per task.", ge=1)] = 100
    allowed_tools: Annotated[
        list[str],
        Field(description="Tool names the agent may use (e.g. Bash, Read); empty = all."),
    ] = []
    permission_mode: Annotated[
        Literal["default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto"],
        Field(description="The Claude CLI permission mode."),
    ] = "bypassPermissions"
    system_prompt_append: Annotated[
        str | None, Field(description="Text appended to the agent's system prompt.")
    ] = None

    @field_validator("allowed_tools")
    @classmethod
    def _tools(cls, value: list[str]) -> list[str]:
        for tool in value:
            if not tool.strip() or "," in tool:
                raise ValueError(f"one tool name per item (got {tool!r})")
        return value


def is_anthropic(url: str) -> bool:
    return urlsplit(url).hostname == "api.anthropic.com"


class ProxyConfig(Strict):
    """The proxy that holds the Anthropic key; the sandbox gets only a per-run token."""

    enabled: Annotated[bool, Field(description="Route the agent's API calls via the proxy.")] = True
    secret: Annotated[
        ModalName | None,
        Field(
            description=(
                "Modal secret holding ANTHROPIC_API_KEY; only the proxy sees it (locally: "
                "$ML_AGENT_HOME/secrets/<name>.env or the host's ANTHROPIC_API_KEY)."
            )
        ),
    ] = None
    upstream: Annotated[
        str,
        Field(description="Where the proxy forwards to (https; http only for localhost)."),
    ] = ANTHROPIC_UPSTREAM
    upstream_secret: Annotated[
        ModalName | None,
        Field(
            description=(
                "Required when upstream is not api.anthropic.com: the secret whose "
                "ANTHROPIC_API_KEY the proxy sends there (the Anthropic key never follows a "
                "config to another host)."
            )
        ),
    ] = None
    budget_usd: Annotated[
        float | None,
        Field(
            description="Per-run spend limit in USD; the proxy refuses requests beyond it.", gt=0
        ),
    ] = None
    allowed_paths: Annotated[
        list[str],
        Field(description="'METHOD /path' pairs the proxy forwards; everything else is 403."),
    ] = list(DEFAULT_ALLOWED_PATHS)

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        parts = urlsplit(value)
        local = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"upstream must be an https URL (got {value!r})")
        if parts.scheme == "http" and not local:
            raise ValueError(
                f"upstream must use https (got {value!r}); did you mean "
                f"{value.replace('http://', 'https://', 1)!r}?"
            )
        if parts.username or parts.password:
            raise ValueError("upstream must not hold credentials; put the key in upstream_secret")
        if parts.query or parts.fragment:
            raise ValueError(f"upstream takes no query or fragment (got {value!r})")
        return value.rstrip("/")

    @field_validator("allowed_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        methods = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
        for item in value:
            method, _, path = item.partition(" ")
            if method not in methods or not path.startswith("/") or " " in path:
                raise ValueError(f"write 'METHOD /path', e.g. 'POST /v1/messages' (got {item!r})")
        return value

    @model_validator(mode="after")
    def _upstream_key(self) -> Self:
        if self.enabled and not is_anthropic(self.upstream) and self.upstream_secret is None:
            _fail(
                "ProxyConfig",
                [
                    (
                        ("upstream",),
                        f"upstream {self.upstream!r} is not api.anthropic.com, so it needs "
                        "upstream_secret: the secret with that host's key (the Anthropic key "
                        "is never sent elsewhere)",
                        self.upstream,
                    )
                ],
            )
        return self


_HF_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"


class SyncerConfig(Strict):
    """Publishes the trackio metrics on a volume to a private Hugging Face Space."""

    enabled: Annotated[bool, Field(description="Run the metric syncer.")] = True
    volume: Annotated[
        Key | None, Field(description="The key of the volume that holds trackio's .db files.")
    ] = None
    namespace: Annotated[
        str | None,
        Field(
            description="The only HF user or org the syncer publishes to.",
            pattern=f"^{_HF_NAME}$",
        ),
    ] = None
    space_id: Annotated[
        str | None,
        Field(
            description=(
                "<namespace>/<space>; optional (else the space_id file the agent writes, "
                "which must also be inside namespace)."
            ),
            pattern=f"^{_HF_NAME}/{_HF_NAME}$",
        ),
    ] = None
    secret: Annotated[
        ModalName | None,
        Field(description="Modal secret with the HF write token (HF_TOKEN); never in the sandbox."),
    ] = None
    private: Annotated[bool, Field(description="Create the Space private.")] = True
    interval: Annotated[Duration, Field(description="How often to sync: 30s, 5m...")] = 30

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: int) -> int:
        return _check_duration(value, low=5, high=MAX_TIMEOUT_S, what="interval")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        if self.enabled:
            for name in ("volume", "namespace", "secret"):
                if getattr(self, name) is None:
                    errors.append(
                        ((name,), f"the syncer needs {name} (or set enabled: false)", None)
                    )
        if self.space_id and self.namespace and self.space_id.split("/")[0] != self.namespace:
            errors.append(
                (
                    ("space_id",),
                    f"space_id {self.space_id!r} is outside namespace {self.namespace!r}; "
                    f"write {self.namespace}/{self.space_id.split('/', 1)[1]}",
                    self.space_id,
                )
            )
        _fail("SyncerConfig", errors)
        return self


# -- the whole config ----------------------------------------------------------------------


class LaunchConfig(Strict):
    """One launch of the agent: where it runs, with what image, volumes and limits.

    `extends:` is resolved by the loader before validation and never reaches this model.
    """

    app: Annotated[
        AppName,
        Field(
            description=(
                "Modal app name; the proxy and syncer deploy under it, and the Modal backend "
                f"names its stores after it (`<app>-tokens`, ...): at most {APP_NAME_MAX} "
                "characters."
            )
        ),
    ]
    backend: Annotated[
        Literal["modal", "local"],
        Field(description="modal (default) or local (one machine, bubblewrap, no account)."),
    ] = "modal"
    image: Annotated[ImageConfig, Field(description="The sandbox image.")]
    volumes: Annotated[
        dict[Key, VolumeConfig],
        Field(
            description=(
                "Logical key -> volume. A `data` volume is required: run folders live at "
                "<data mount>/runs/<run id>."
            )
        ),
    ]
    sandbox: Annotated[SandboxConfig, Field(description="The sandbox.")] = SandboxConfig()
    agent: Annotated[AgentConfig, Field(description="The agent.")] = AgentConfig()
    proxy: Annotated[ProxyConfig, Field(description="The Anthropic API proxy.")] = ProxyConfig()
    syncer: Annotated[SyncerConfig, Field(description="The metric syncer.")] = SyncerConfig(
        enabled=False
    )

    @field_validator("volumes")
    @classmethod
    def _data_volume(cls, value: dict[str, VolumeConfig]) -> dict[str, VolumeConfig]:
        if DATA_VOLUME not in value:
            raise ValueError(
                f"a volume with key {DATA_VOLUME!r} is required: run folders live on it "
                f"(<mount>/runs/<run id>); add  {DATA_VOLUME}: {{name: sandbox-data, "
                "mount: /data}"
            )
        if value[DATA_VOLUME].read_only:
            _fail(
                "volumes",
                [
                    (
                        (DATA_VOLUME, "read_only"),
                        "the data volume holds the run folders, so it must be writable",
                        True,
                    )
                ],
            )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        errors: list[tuple[Loc, str, Any]] = []
        by_mount: dict[str, str] = {}
        by_name: dict[str, str] = {}
        for key, vol in self.volumes.items():
            if vol.mount in by_mount:
                errors.append(
                    (
                        ("volumes", key, "mount"),
                        f"{vol.mount!r} is already the mount of volume {by_mount[vol.mount]!r}; "
                        "give each volume its own path",
                        vol.mount,
                    )
                )
            else:
                by_mount[vol.mount] = key
            if vol.name in by_name:
                errors.append(
                    (
                        ("volumes", key, "name"),
                        f"Modal volume {vol.name!r} is already mounted as {by_name[vol.name]!r}; "
                        "Modal mounts a volume at one path only",
                        vol.name,
                    )
                )
            else:
                by_name[vol.name] = key
        for i, layer in enumerate(self.image.layers):
            if not isinstance(layer, FileLayer | DirLayer):
                continue
            kind = layer_kind(layer)
            dest = getattr(layer, kind).dest
            for key, vol in self.volumes.items():
                if _inside(dest, vol.mount) or (kind == "dir" and _inside(vol.mount, dest)):
                    errors.append(
                        (
                            ("image", "layers", i, kind, "dest"),
                            f"{dest!r} overlaps volume {key!r} mounted at {vol.mount!r}; the "
                            "volume would hide it: choose a dest outside the volume",
                            dest,
                        )
                    )
        if self.backend == "modal" and (
            why := python_for_builder(self.image.python, self.image.builder)
        ):
            errors.append((("image", "python"), why, self.image.python))
        if self.syncer.volume is not None and self.syncer.volume not in self.volumes:
            hint = did_you_mean(self.syncer.volume, list(self.volumes)) or (
                f"; volumes are: {', '.join(self.volumes)}"
            )
            errors.append(
                (
                    ("syncer", "volume"),
                    f"unknown volume key {self.syncer.volume!r}{hint}",
                    self.syncer.volume,
                )
            )
        proxy = self.proxy
        # Locally the proxy is a Unix socket bound into a blocked sandbox; Modal's
        # block_network would cut the sandbox off from the proxy's web endpoint.
        if proxy.enabled and self.sandbox.network.mode == "blocked" and self.backend == "modal":
            errors.append(
                (
                    ("sandbox", "network"),
                    "a blocked network cuts the agent off from its proxy on Modal; use "
                    "{allowlist: [domains]} (the proxy's host is added for you), or the "
                    "local backend, which enforces `blocked` with the proxy reachable",
                    "blocked",
                )
            )
        if (
            self.backend == "modal"
            and proxy.enabled
            and proxy.secret is None
            and is_anthropic(proxy.upstream)
        ):
            errors.append(
                (
                    ("proxy", "secret"),
                    "the modal backend needs proxy.secret: the Modal secret holding "
                    "ANTHROPIC_API_KEY (e.g. secret: anthropic-secret)",
                    None,
                )
            )
        _fail("LaunchConfig", errors)
        return self


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
