"""`ml-agent plan CONFIG` (what `up` would do, and what it may cost) and `ml-agent schema`.

Nothing here talks to a network or imports modal: the plan is read from the config and
its local files only. Rich is imported inside the commands.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ml_agent import contracts

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    from ml_agent.config.redact import Redactor
    from ml_agent.plan import Plan

#: The run id shown in a plan: the launcher mints the real one at `up`.
RUN_ID_PLACEHOLDER = "<run id>"
HIDDEN = "<hidden>"
#: Env names whose values are not printed (they belong in a Modal secret, not in YAML).
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)

PLAN_HELP = """Show what `up` would launch, without launching it (no network, no Modal account).

Image layers, volumes, env, secrets, GPU and timeouts, proxy and syncer, the Modal calls
`up` makes, the worst-case cost, and what can only be checked at launch. With no CONFIG,
the shipped `configs/local.yaml`, as for `up`.

Examples:

    ml-agent plan
    ml-agent plan configs/a10.yaml
    ml-agent plan configs/a10.yaml --set sandbox.gpu=H100:2 --set sandbox.timeout=4h
    ml-agent plan configs/local.yaml --json > plan.json
"""

SCHEMA_HELP = """Print the JSON Schema of config files (committed at schema/ml-agent.schema.json).

Editors use it through the first line of each shipped config:
`# yaml-language-server: $schema=../schema/ml-agent.schema.json`.

Examples:

    ml-agent schema
    ml-agent schema -o schema/ml-agent.schema.json
"""


def load_plan(
    config: str,
    overrides: Sequence[str] = (),
    backend: str | None = None,
    allow: Sequence[str] | None = None,
) -> Plan:
    """The Plan of a config file as `plan` shows it: per-launch parts as placeholders,
    values from `${env:...}` as `${env:NAME}` and secret-looking env values hidden."""
    return shown_plan(*_plan_and_redactor(config, overrides, backend, allow))


def _plan_and_redactor(
    config: str, overrides: Sequence[str], backend: str | None, allow: Sequence[str] | None
) -> tuple[Plan, Redactor]:
    from ml_agent.config import load
    from ml_agent.config.redact import Redactor
    from ml_agent.plan import build_plan

    sets = [*overrides, *([f"backend={backend}"] if backend else [])]
    launch_config, source = load(config, sets, allow=allow)
    plan = build_plan(launch_config, config).for_launch(RUN_ID_PLACEHOLDER)
    return plan, Redactor({**source.shown, **_hidden_hashes(plan, source.shown)})


#: What `plan` shows for a hash over values from the environment; it fits in the Modal
#: sandbox tag (32 characters).
HIDDEN_HASH = "<hidden: covers ${env:...}>"
#: Where a hash is printed in part: `plan`'s heading (12), the Modal sandbox tag (32).
_HASH_PREFIXES = (12, 32)


def _hidden_hashes(plan: Plan, shown: Mapping[str, str]) -> dict[str, str]:
    """The plan's hashes, whole and as printed in part, when values from the environment
    went into them: a hash over a short secret (a PIN) would let anyone who reads the
    output find it by trying every value. The run records the real hash."""
    if not shown:
        return {}
    hidden = {}
    for value in (plan.config_hash, plan.app_hash):
        for size in (len(value), *_HASH_PREFIXES):
            hidden[value[:size]] = HIDDEN_HASH
    return hidden


#: Plan fields whose value is one of a few public names (the config accepts nothing
#: else), so not a secret wherever it came from: shown as they are, and the cost and the
#: warnings are worked out from them.
PUBLIC_FIELDS = (
    ("backend",),
    ("image", "python"),
    ("sandbox", "gpu"),
    ("sandbox", "network", "mode"),
    ("agent", "permission_mode"),
)


def _public(plan: Plan) -> list[object]:
    values = []
    for path in PUBLIC_FIELDS:
        node: object = plan
        for name in path:
            node = getattr(node, name)
        values.append(node)
    return values


def shown_plan(plan: Plan, redactor: Redactor) -> Plan:
    """The plan fit to print: every value that came from the environment shows as
    `${env:NAME}` (the real plan keeps the values the backends need), but PUBLIC_FIELDS."""
    redactor = redactor.without(_public(plan))
    if redactor:
        plan = type(plan).model_validate(redactor.data(plan.model_dump(mode="json")))
    return mask_env(plan)


def mask_env(plan: Plan) -> Plan:
    """The plan with secret-looking config env values replaced by `<hidden>`."""
    env = {k: HIDDEN if SECRET_NAME_RE.search(k) else v for k, v in plan.sandbox.env.items()}
    if env == plan.sandbox.env:
        return plan
    return plan.model_copy(update={"sandbox": plan.sandbox.model_copy(update={"env": env})})


# -- what `up` would call ------------------------------------------------------------------


def _py(value: object) -> str:
    """A value as Python source; strings double-quoted like the rest of the listing."""
    from ml_agent.backends.modal.builder import Ref

    if isinstance(value, Ref):
        return value.source
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def _args(*args: object, **kwargs: object) -> str:
    return ", ".join([*(_py(a) for a in args), *(f"{k}={_py(v)}" for k, v in kwargs.items())])


#: Where `plan` puts the proxy's host in an allow-list (its URL exists once deployed).
PROXY_URL_PLACEHOLDER = "https://<proxy host>"


def modal_calls(plan: Plan) -> list[str]:
    """The Modal SDK calls `up` makes for this plan, as Python source lines.

    `Sandbox.create`'s arguments are the builder's own (`sandbox_create_spec`), printed.
    """
    from ml_agent.backends.modal.builder import image_steps, sandbox_create_spec, volume_variable

    lines = [f"app = modal.App.lookup({_args(plan.app)})  # deployed first: proxy, syncer"]
    lines.append(f"image = modal.Image.debian_slim({_args(python_version=plan.image.python)})"
                 f"  # image builder {plan.image.builder}")
    for step in image_steps(plan.image):
        options = {k: v for k, v in step.kwargs.items() if v}  # copy=False is the default
        lines.append(f"image = image.{step.method}({_args(*step.args, **options)})")
    for vol in plan.volumes:
        call = f"modal.Volume.from_name({_args(vol.name, create_if_missing=vol.create_if_missing)})"
        if vol.read_only:
            call += ".with_mount_options(read_only=True)"
        lines.append(f"{volume_variable(vol.key)} = {call}")
    args, kwargs = sandbox_create_spec(plan, proxy_url=PROXY_URL_PLACEHOLDER)
    n_env = len(plan.sandbox.env) + len(contracts.protocol.ENV)
    body = "".join(f"\n    {k}={_py(v)}," for k, v in kwargs.items())
    body = body.replace("env={...},", f"env={{...}},  # {n_env} variables: see Env above")
    lines.append(f"sb = modal.Sandbox.create(\n    {_args(*args)},{body}\n)")
    return lines


def _reservation(value: float | tuple[float, float] | None, unit: str) -> str:
    """`2 cores`, `1 cores (limit 4 cores)`, or `default`."""
    if value is None:
        return "default"
    if isinstance(value, tuple):
        return f"{unit.format(value[0])} (limit {unit.format(value[1])})"
    return unit.format(value)


def local_steps(plan: Plan) -> list[str]:
    """What the local backend does for this plan, in words."""
    home = "$ML_AGENT_HOME"
    pip = [p for layer in plan.image.layers if layer.kind == "pip" for p in layer.packages]
    steps = [
        f"check the host Python is {plan.image.python}; apt layers are checked, not installed",
        f"virtualenv with {', '.join(pip) or 'no packages'} (cached by their hash)",
    ]
    for vol in plan.volumes:
        mode = "read-only" if vol.read_only else "read-write"
        steps.append(f"bind {home}/volumes/{vol.name}/ at {vol.mount} ({mode})")
    for layer in plan.image.layers:
        if layer.kind in ("file", "dir"):
            steps.append(f"bind {layer.src} at {layer.dest} (read-only)")
    if plan.proxy.enabled:
        key = "the host's ANTHROPIC_API_KEY"
        if plan.proxy.secret:
            key = f"{home}/secrets/{plan.proxy.secret}.env or {key}"
        steps.append(f"proxy on 127.0.0.1 (key from {key})")
        if plan.sandbox.network.mode == "blocked":
            steps.append("no network in the sandbox: the proxy's Unix socket is bound in, "
                         "relayed to the same URL on the sandbox's own loopback")
    steps.append(f"bwrap ... python {plan.agent.entrypoint} (clear env, the Env above only)")
    return steps


# -- warnings: what only a launch can check ------------------------------------------------


def launch_warnings(plan: Plan) -> list[str]:
    out = []
    modal = plan.backend == "modal"
    if modal:
        names = [*plan.sandbox.secrets]
        if plan.proxy.enabled and plan.proxy.secret:
            names.append(plan.proxy.secret)
        if plan.syncer.enabled and plan.syncer.secret:
            names.append(plan.syncer.secret)
        if names:
            out.append(
                f"checked at launch: the Modal secrets {', '.join(names)} exist in your workspace"
            )
        if plan.sandbox.gpu:
            out.append(
                f"checked at launch: GPU {plan.sandbox.gpu} is available on your Modal plan "
                "and within your GPU quota"
            )
        for vol in plan.volumes:
            if not vol.create_if_missing:
                out.append(f"checked at launch: the Modal volume {vol.name!r} exists")
    else:
        host = "{}.{}".format(*sys.version_info[:2])
        if host != plan.image.python:
            out.append(
                f"the local backend runs the host's Python {host}, but image.python is "
                f'{plan.image.python}: set image.python: "{host}" or use that Python'
            )
        if plan.sandbox.gpu and not Path("/dev/nvidia0").exists():
            out.append(f"GPU {plan.sandbox.gpu} asked for, but no /dev/nvidia0 on this machine")
    if plan.syncer.enabled:
        out.append(
            f"checked at launch: the HF token in {plan.syncer.secret!r} can write to "
            f"{plan.syncer.namespace!r}"
        )
    if plan.proxy.enabled and plan.proxy.budget_usd is None:
        out.append("no proxy.budget_usd: the agent's API spend is not limited")
    if not plan.proxy.enabled:
        out.append("proxy disabled: the agent gets no run token and must bring its own API key")
    dests = [layer.dest for layer in plan.image.layers if layer.kind in ("file", "dir")]
    entry = plan.agent.entrypoint
    if not any(entry == d or entry.startswith(d.rstrip("/") + "/") for d in dests):
        out.append(f"agent.entrypoint {entry} is not added by a file or dir layer")
    if plan.sandbox.idle_timeout_s and plan.sandbox.idle_timeout_s >= plan.sandbox.timeout_s:
        out.append("idle_timeout is not shorter than timeout, so it never applies")
    for name, value in plan.sandbox.env.items():
        if value == HIDDEN:
            out.append(f"sandbox.env.{name} looks like a secret: put it in a Modal secret")
    return out


# -- rendering -----------------------------------------------------------------------------


def _fmt_duration(seconds: int | None) -> str:
    from ml_agent.config.types import format_duration

    return "none" if seconds is None else f"{format_duration(seconds)} ({seconds} s)"


def _short(digest: str) -> str:
    """A hash as the heading shows it: 12 hex digits (or what `plan` shows instead)."""
    return digest[:12] if re.fullmatch(r"[0-9a-f]{64}", digest) else digest


def render(plan: Plan, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ml_agent.plan import PRICES_AS_OF, AptLayer, EnvLayer, PipLayer, RunLayer, worst_case_cost

    def table(title: str, *columns: str) -> Table:
        t = Table(title=title, title_justify="left", title_style="bold", show_lines=False)
        for col in columns:
            t.add_column(col, overflow="fold")
        return t

    e = escape
    console.print(
        f"[bold]Plan[/] for {e(plan.config_path)}: app [bold]{e(plan.app)}[/], backend "
        f"[bold]{plan.backend}[/], config hash {_short(plan.config_hash)}, app hash "
        f"{_short(plan.app_hash)}"
    )
    image = table(f"Image: debian slim, Python {plan.image.python}", "#", "layer", "what", "how")
    for i, layer in enumerate(plan.image.layers, start=1):
        if isinstance(layer, AptLayer | PipLayer):
            what, how = " ".join(layer.packages), "build"
        elif isinstance(layer, EnvLayer):
            what, how = " ".join(f"{k}={v}" for k, v in layer.env.items()), "build"
        elif isinstance(layer, RunLayer):
            what, how = " && ".join(layer.commands), "build"
        else:
            what = f"{layer.src} -> {layer.dest}"
            how = "copied into the image" if layer.copy_ else "mounted at start"
        image.add_row(str(i), layer.kind, e(what), how)
    console.print(image)

    vols = table("Volumes", "key", "name", "mount", "create if missing", "read-only")
    for v in plan.volumes:
        vols.add_row(v.key, v.name, v.mount, _yes(v.create_if_missing), _yes(v.read_only))
    console.print(vols)

    sb = plan.sandbox
    net = sb.network.mode + (f": {', '.join(sb.network.domains)}" if sb.network.domains else "")
    box = table("Sandbox", "setting", "value")
    for key, value in (
        ("gpu", sb.gpu or "none (CPU only)"),
        ("timeout", _fmt_duration(sb.timeout_s)),
        ("idle timeout", _fmt_duration(sb.idle_timeout_s)),
        ("workdir", sb.workdir or "default"),
        ("cpu", _reservation(sb.cpu, "{:g} cores")),
        ("memory", _reservation(sb.memory_mib, "{} MiB")),
        ("region", ", ".join(sb.region) if sb.region else "any"),
        ("cloud", sb.cloud or "Modal's choice"),
        ("network", net),
        ("run folder", plan.launch.run_dir if plan.launch else "-"),
    ):
        box.add_row(key, e(value))
    console.print(box)

    env = table("Env (what the agent sees, besides its secrets)", "name", "value", "from")
    for name, value in sb.env.items():
        env.add_row(name, e(value), "sandbox.env")
    for name, value in (plan.launch.env if plan.launch else {}).items():
        env.add_row(name, e(value), "launcher")
    console.print(env)

    secrets = table("Secrets (names only; values are never read or shown)", "secret", "used by")
    for s in sb.secrets:
        secrets.add_row(s, "sandbox: env vars the agent can read")
    if plan.proxy.enabled and plan.proxy.secret:
        secrets.add_row(plan.proxy.secret, "proxy only (ANTHROPIC_API_KEY)")
    if plan.syncer.enabled and plan.syncer.secret:
        secrets.add_row(plan.syncer.secret, "syncer only (HF write token)")
    console.print(secrets)

    agent = plan.agent
    ag = table("Agent", "setting", "value")
    ag.add_row("entrypoint", agent.entrypoint)
    ag.add_row("model", agent.model)
    ag.add_row("max turns", str(agent.max_turns))
    ag.add_row("allowed tools", ", ".join(agent.allowed_tools) or "all")
    ag.add_row("permission mode", agent.permission_mode)
    ag.add_row("system prompt append", e(agent.system_prompt_append or "none"))
    console.print(ag)

    px = plan.proxy
    proxy = table("Proxy", "setting", "value")
    proxy.add_row("enabled", _yes(px.enabled))
    proxy.add_row("upstream", px.upstream)
    proxy.add_row("key from secret", px.secret or "none (local: host ANTHROPIC_API_KEY)")
    proxy.add_row("budget per run", "unlimited" if px.budget_usd is None else f"${px.budget_usd:g}")
    proxy.add_row("allowed paths", ", ".join(px.allowed_paths))
    console.print(proxy)

    sy = plan.syncer
    syncer = table("Syncer", "setting", "value")
    syncer.add_row("enabled", _yes(sy.enabled))
    target = sy.space_id or (
        f"{sy.namespace}/<the space_id file the agent writes>" if sy.namespace else "-"
    )
    syncer.add_row("target Space", f"{target} ({'private' if sy.private else 'public'})")
    syncer.add_row("volume", f"{sy.volume} ({sy.volume_name} at {sy.mount})" if sy.volume else "-")
    syncer.add_row("interval", _fmt_duration(int(sy.interval_s)))
    syncer.add_row("HF token from secret", sy.secret or "-")
    console.print(syncer)

    if plan.backend == "modal":
        console.print("[bold]Modal calls `up` makes[/] (after deploying the proxy and syncer):")
        console.print(e("\n".join(modal_calls(plan))), soft_wrap=True)
    else:
        console.print("[bold]What `up` does locally[/]:")
        for step in local_steps(plan):
            console.print(f"  - {e(step)}")

    cost = worst_case_cost(plan)
    hours = sb.timeout_s / 3600
    costs = table("Worst-case cost (estimate)", "item", "USD")
    note = (
        f"an estimate from Modal's list prices of {PRICES_AS_OF}: the sandbox lives its whole "
        "timeout and the agent spends its whole budget"
    )
    if plan.backend == "modal":
        costs.add_row(f"GPU {sb.gpu or 'none'} for {hours:g} h", f"{cost['gpu']:.2f}")
        costs.add_row("CPU and memory", f"{cost['cpu'] + cost['memory']:.2f}")
    else:
        costs.add_row("compute (your machine)", "0.00")
    api = "unlimited" if px.budget_usd is None else f"{cost['api']:.2f}"
    costs.add_row("Anthropic API (proxy budget)", api)
    costs.add_row(
        "[bold]total[/]", f"[bold]{cost['total']:.2f}[/]" + ("+" if api == "unlimited" else "")
    )
    console.print(costs)
    console.print(f"[dim]{note}[/]")

    warnings = launch_warnings(plan)
    if warnings:
        console.print("[bold yellow]Checked only at launch / warnings:[/]")
        for w in warnings:
            console.print(f"  [yellow]![/] {e(w)}")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _console() -> Console:
    from rich.console import Console

    # Wide when piped, so paths and calls stay on one line for grep and diff.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def register(app: typer.Typer) -> None:
    import typer

    from ml_agent.config import tree

    @app.command("plan", help=PLAN_HELP)
    def plan_cmd(
        config: str = typer.Argument(
            None, metavar="CONFIG", help="The config file; default: the shipped local.yaml."
        ),
        overrides: list[str] = typer.Option(  # noqa: B008 - Typer's declaration style
            [], "--set", metavar="KEY=VALUE", help="Override a value (parsed as YAML)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the Plan as JSON."),
        backend: str | None = typer.Option(
            None, "--backend", help="modal or local (default: the config's backend)."
        ),
        allow: list[str] = typer.Option(  # noqa: B008
            [], tree.FLAG, metavar="PATH", help=tree.FLAG_HELP
        ),
    ) -> None:
        from ml_agent.contracts import CONFIGS_DIR

        if backend not in (None, "modal", "local"):
            raise typer.BadParameter(f"choose modal or local (got {backend!r})",
                                     param_hint="'--backend'")
        config = config or str(CONFIGS_DIR / "local.yaml")
        real, redactor = _plan_and_redactor(config, overrides, backend, allow)
        plan = shown_plan(real, redactor)
        redactor = redactor.without(_public(real))
        if as_json:
            sys.stdout.write(redactor.text(plan.model_dump_json(indent=2)) + "\n")
            return
        console = _console()
        with console.capture() as captured:
            render(plan, console)
        # and whatever the tables print beyond the plan's own fields, e.g. the Modal calls
        sys.stdout.write(redactor.text(captured.get()))

    @app.command("schema", help=SCHEMA_HELP)
    def schema_cmd(
        output: str | None = typer.Option(
            None, "--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."
        ),
    ) -> None:
        from ml_agent.config import schema

        if output:
            schema.write(output)
        else:
            sys.stdout.write(schema.render())
