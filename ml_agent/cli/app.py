"""Assembles the Typer app from the command modules; each module registers its commands."""

from __future__ import annotations

import importlib

import typer

from ml_agent import __version__

# Each module has `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "ml_agent.cli.validate",  # validate
    "ml_agent.cli.plan",  # schema, plan
    "ml_agent.cli.runs",  # up, attach, ps, logs, stop, doctor
    "ml_agent.cli.proxy",  # proxy serve, proxy token
    "ml_agent.cli.dashboard",  # dashboard
    "ml_agent.cli.results",  # results
    "ml_agent.cli.pull",  # pull
    "ml_agent.cli.sweep",  # sweep
)

HELP = """Launch an autonomous ML engineer (a Claude agent) in a GPU sandbox, declared in YAML.

Start with `ml-agent up configs/local.yaml` (no Modal account needed), or
`ml-agent validate configs/` in CI.
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ml-agent {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="ml-agent",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        pass

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app
