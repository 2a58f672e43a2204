"""`ml-agent validate PATH...`: check configs offline; every problem as file:line:col.

Start-up time matters here (CI and pre-commit run it on every change), so the command has
a Typer-free fast path (`fast_main`, called by `ml_agent.cli.main`) and imports neither
Typer nor Rich; `ml-agent validate --help` goes through Typer as usual.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

USAGE_EXIT = 2
SUFFIXES = (".yaml", ".yml")

HELP = """Check config files offline: every problem of every file, as `file:line:col: key: message`.

PATHS are files, folders (searched recursively for *.yaml and *.yml) or globs. Exit code 0
when all are valid, 1 when any has a problem, 2 for usage errors (e.g. nothing matched).

Safe on untrusted configs (a pull request in CI): `extends:` and `src:` may name only
files inside the project tree (the nearest folder above the config holding .git, else the
config's folder; symlinks resolved) unless --allow-outside admits more, and a value from
`${env:NAME}` is shown as `${env:NAME}`, never as its value.

Examples:

    ml-agent validate configs/a10.yaml
    ml-agent validate configs/ --format github   # CI annotations
    ml-agent validate 'configs/*.yaml' --set sandbox.gpu=H100
    ml-agent validate configs/ --allow-outside ../shared-configs
"""


class UsageError(Exception):
    """A command-line mistake: exit 2."""


def expand(paths: Sequence[str]) -> list[str]:
    """Files named by PATHS (files, folders searched recursively, globs), in order, once."""
    out: list[str] = []
    for arg in paths:
        if os.path.isdir(arg):
            found = []
            for root, dirs, files in os.walk(arg):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in sorted(files) if f.endswith(SUFFIXES)]
            if not found:
                raise UsageError(f"no .yaml or .yml files in folder '{arg}'")
            out += found
        elif os.path.lexists(arg):
            out.append(arg)
        elif any(c in arg for c in "*?["):
            import glob

            matched = sorted(glob.glob(arg, recursive=True))
            matched = [m for m in matched if not os.path.isdir(m)]
            if not matched:
                raise UsageError(f"no files match '{arg}'")
            out += matched
        else:
            raise UsageError(f"no such file or folder: '{arg}'")
    return list(dict.fromkeys(out))


def run(
    paths: Sequence[str],
    fmt: str = "text",
    overrides: Sequence[str] = (),
    allow: Sequence[str] = (),
) -> int:
    """Validate every file PATHS name; print the problems; return the exit code.
    `allow`: folders outside the project tree that configs may name (--allow-outside)."""
    from ml_agent.config import check
    from ml_agent.config.messages import FORMATS, render

    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if not paths:
        raise UsageError("name at least one config file, folder or glob")
    files = expand(paths)
    problems = []
    bad = 0
    seen = set()
    for file in files:
        _, diags = check(file, overrides, allow=allow)
        bad += bool(diags)
        # a problem in a shared base (or --set) shows up for every file using it: print it once
        new = [d for d in diags if d not in seen]
        seen.update(new)
        problems += new
        if fmt != "json":  # streamed: a long run shows its first problems early
            sys.stdout.write(render(new, fmt))
    if fmt == "json":
        sys.stdout.write(render(problems, fmt, files))
    sys.stdout.flush()
    if fmt == "text":
        n = len(files)
        noun = "file" if n == 1 else "files"
        if problems:
            count = len(problems)
            sys.stderr.write(f"{count} problem{'s' if count > 1 else ''} in {bad} of {n} {noun}\n")
        else:
            sys.stderr.write(f"{n} {noun} valid\n")
    return 1 if problems else 0


def _usage(message: str) -> int:
    from ml_agent.cli.output import usage_line

    sys.stderr.write(usage_line("ml-agent validate", message) + "\n")
    return USAGE_EXIT


def _no_pydantic_plugins() -> None:
    """Pydantic scans every installed package's entry points for plugins (observability
    hooks) on its first model; a static check needs none. The documented switch skips the
    scan; a user's own setting stands.

    With the scan off, pydantic still imports its plugin loader, which imports
    importlib.metadata (email, zipfile, csv: ~20 ms, an eighth of validate's start-up) only
    to scan: stand in for that loader with one that has no plugins, as the switch says.
    """
    if os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__") != "__all__":
        return
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        import types

        loader = types.ModuleType(name, "pydantic's plugin loader, plugins disabled")
        loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
        sys.modules[name] = loader


def _quick_exit() -> None:
    """At exit the interpreter garbage-collects everything pydantic built (~50 ms, a fifth
    of a run) only to free memory the OS takes back anyway: exempt those objects. Done at
    exit, so a caller that lives on (tests calling main()) keeps its collector as it is."""
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once, however often main() runs in one process
    atexit.register(gc.freeze)


def fast_main(argv: Sequence[str]) -> int:
    """`ml-agent validate ARGS` without Typer (same options; `--help` goes to Typer)."""
    _no_pydantic_plugins()
    _quick_exit()
    paths: list[str] = []
    fmt = "text"
    overrides: list[str] = []
    allow: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            paths += args[i:]
            break
        name, eq, inline = arg.partition("=")
        if name in ("--format", "-f", "--set", "--allow-outside"):
            if eq:
                value = inline
            elif i < len(args):
                value, i = args[i], i + 1
            else:
                return _usage(f"option '{name}' needs a value")
            if name == "--set":
                overrides.append(value)
            elif name == "--allow-outside":
                allow.append(value)
            else:
                fmt = value
        elif arg.startswith("-") and arg != "-":
            return _usage(f"unknown option '{arg}'")
        else:
            paths.append(arg)
    try:
        return run(paths, fmt, overrides, allow)
    except UsageError as exc:
        return _usage(str(exc))


def register(app: typer.Typer) -> None:
    import typer

    from ml_agent.config import tree

    @app.command("validate", help=HELP)
    def validate(
        paths: list[str] = typer.Argument(  # noqa: B008 - Typer's declaration style
            ..., metavar="PATH", help="Config files, folders or globs.", show_default=False
        ),
        fmt: str = typer.Option(
            "text",
            "--format",
            "-f",
            metavar="FORMAT",
            help="Output: text, json or github (annotations).",
        ),
        overrides: list[str] = typer.Option(  # noqa: B008
            [], "--set", metavar="KEY=VALUE", help="Override a value (parsed as YAML)."
        ),
        allow: list[str] = typer.Option(  # noqa: B008
            [], tree.FLAG, metavar="PATH", help=tree.FLAG_HELP
        ),
    ) -> None:
        try:
            code = run(paths, fmt, overrides, allow)
        except UsageError as exc:
            code = _usage(str(exc))
        raise typer.Exit(code)
