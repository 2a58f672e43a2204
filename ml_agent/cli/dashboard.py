"""`ml-agent dashboard [CONFIG]`: trackio's local dashboard on the local trackio volume.

The volume is `$ML_AGENT_HOME/volumes/<trackio volume name>` (the config's `syncer.volume`,
else its `trackio` volume, else `sandbox-trackio`). trackio reads a private mirror that the
sync loop refreshes every few seconds, never the volume itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

DEFAULT_VOLUME = "sandbox-trackio"

HELP = """Open trackio's dashboard on the metrics of local runs (`backend: local`).

Reads `$ML_AGENT_HOME/volumes/<trackio volume>` through a private copy refreshed every
few seconds (the dashboard never touches the agent's files). Runs on Modal publish to
their Hugging Face Space instead (`syncer:` in the config).

Examples:

    ml-agent dashboard
    ml-agent dashboard configs/local.yaml --project mnist
"""

# The child interpreter: trackio reads TRACKIO_DIR (the mirror) at import.
SHOW_CODE = """\
import sys
import trackio
project = sys.argv[1] or None
port = int(sys.argv[2]) if sys.argv[2] else None
trackio.show(project=project, server_port=port, open_browser=sys.argv[3] == "1")
"""


def trackio_volume_name(config: str | None, allow: Sequence[str] | None = None) -> str:
    """The trackio volume's name: from the config when given, else the default. `allow`:
    folders outside the project tree the config may name (--allow-outside)."""
    if config is None:
        return DEFAULT_VOLUME
    from ml_agent.config import load_config
    from ml_agent.errors import MlAgentError

    launch = load_config(config, allow=allow)
    key = launch.syncer.volume or ("trackio" if "trackio" in launch.volumes else None)
    if key is None or key not in launch.volumes:
        raise MlAgentError(
            f"{config}: no trackio volume: set syncer.volume to the key of the volume that "
            "holds trackio's files (e.g. `syncer: {volume: trackio}`)"
        )
    return launch.volumes[key].name


def local_volume_dir(name: str) -> Path:
    from ml_agent.contracts import ml_agent_home

    return ml_agent_home() / "volumes" / name


def dashboard(
    config: str | None,
    project: str | None = None,
    port: int | None = None,
    open_browser: bool = True,
    interval_s: float = 3.0,
    allow: Sequence[str] | None = None,
) -> int:
    """Mirror the volume, run trackio's dashboard on the mirror until it exits or Ctrl-C."""
    import os
    import subprocess
    import sys
    import tempfile

    from ml_agent.cli.output import err_console
    from ml_agent.errors import MlAgentError
    from ml_agent.syncer.loop import Syncer
    from ml_agent.syncer.mirror import MirrorUploader
    from ml_agent.syncer.runner import SyncerThread

    volume = local_volume_dir(trackio_volume_name(config, allow))
    if not volume.is_dir():
        raise MlAgentError(
            f"no local trackio volume at {volume}: start a local run first "
            "(`ml-agent up configs/local.yaml`); Modal runs publish to their Space"
        )
    with tempfile.TemporaryDirectory(prefix="ml-agent-dashboard-") as tmp:
        mirror = Path(tmp) / "trackio"
        syncer = Syncer(
            volume, MirrorUploader(mirror), resolve_space=lambda: "local",
            work_dir=Path(tmp) / "work", log=lambda line: err_console().print(line, markup=False),
        )
        syncer.cycle()  # the dashboard opens on data, not an empty folder
        refresher = SyncerThread(syncer, interval_s).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKIO_")}
        env["TRACKIO_DIR"] = str(mirror)
        argv = [sys.executable, "-c", SHOW_CODE, project or "", str(port or ""),
                "1" if open_browser else "0"]
        err_console().print(f"trackio dashboard on {volume} (a copy refreshed every "
                            f"{interval_s:g} s); Ctrl-C to stop", markup=False)
        child = subprocess.Popen(argv, env=env, cwd=tmp)
        try:
            code = child.wait()
        except KeyboardInterrupt:
            child.terminate()
            code = child.wait(timeout=10)
        finally:
            refresher.stop(timeout=30)
    return 0 if code in (0, -2, -15, 130) else code


def register(app: typer.Typer) -> None:
    import typer

    from ml_agent.config import tree

    @app.command("dashboard", help=HELP)
    def _dashboard(
        config: str | None = typer.Argument(
            None, help="A config file; its syncer.volume names the trackio volume."
        ),
        project: str | None = typer.Option(None, "--project", "-p", help="Open this project."),
        port: int | None = typer.Option(None, "--port", help="Port (default: from 7860 up)."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
        allow: list[str] = typer.Option(  # noqa: B008 - Typer's declaration style
            [], tree.FLAG, metavar="PATH", help=tree.FLAG_HELP
        ),
    ) -> None:
        code = dashboard(config, project=project, port=port, open_browser=not no_browser,
                         allow=allow)
        if code:
            raise typer.Exit(code)
