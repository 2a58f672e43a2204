"""Which Hugging Face Space the metrics go to: the config's, or the agent's pick in its namespace.

The contract with the agent (agent/agent.py, .claude/ instructions): it may write a file
named `space_id` at the top of the trackio folder (`$TRACKIO_DIR/space_id`) holding one
line, `namespace/name` (e.g. `my-org/mnist-sweep`). The syncer honours it only when the
config sets no `syncer.space_id` and the file's namespace is exactly `syncer.namespace`:
the sandbox can choose a Space name, never the account. Anything else is ignored with a
warning (once per distinct content).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ml_agent.errors import UnsafeFile
from ml_agent.fileio import open_dir, read_untrusted

SPACE_ID_FILE = "space_id"
#: Hub repo ids: `namespace/name`; names up to 96 characters, no `--` or `..`.
SPACE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_MAX_FILE_BYTES = 1024


def valid_space_id(value: str) -> bool:
    return bool(SPACE_ID_RE.match(value)) and "--" not in value and ".." not in value


def read_space_id_file(trackio_dir: Path) -> str | None:
    """The stripped first line of `<trackio_dir>/space_id`, or None when there is none.

    Raises ValueError when the entry is not a small regular file (links are not followed).
    """
    try:
        folder = open_dir(trackio_dir)
    except FileNotFoundError:
        return None
    try:
        data = read_untrusted(SPACE_ID_FILE, cap=_MAX_FILE_BYTES, dir_fd=folder)
    except FileNotFoundError:
        return None
    except UnsafeFile as exc:  # "space_id is a symbolic link; ..." -> "is a symbolic link; ..."
        raise ValueError(str(exc).removeprefix(f"{SPACE_ID_FILE} ")) from exc
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from exc
    finally:
        os.close(folder)
    text = data.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0].strip() if text else None


class SpaceResolver:
    """Resolves the target Space each cycle; `None` means there is nowhere to publish."""

    def __init__(
        self,
        trackio_dir: Path,
        *,
        space_id: str | None,
        namespace: str | None,
        log: Callable[[str], None],
    ) -> None:
        self.trackio_dir = Path(trackio_dir)
        self.space_id = space_id
        self.namespace = namespace
        self.log = log
        self._last_warning: str | None = None

    def _warn(self, message: str) -> None:
        if message != self._last_warning:  # a stuck bad file warns once, not every cycle
            self._last_warning = message
            self.log(f"warning: {message}")

    def __call__(self) -> str | None:
        if self.space_id:
            return self.space_id
        where = f"{self.trackio_dir}/{SPACE_ID_FILE}"
        try:
            chosen = read_space_id_file(self.trackio_dir)
        except ValueError as exc:
            self._warn(f"ignoring {where}: it {exc}")
            return None
        if chosen is None:
            self._warn(
                "no target Space: set syncer.space_id in the config, or let the agent write "
                f"namespace/name to {where}; metrics stay on the volume until then"
            )
            return None
        shown = chosen[:100].encode("unicode_escape").decode("ascii")
        if not valid_space_id(chosen):
            self._warn(f"ignoring {where}: {shown!r} is not a Space id like 'my-org/name'")
            return None
        if not self.namespace:
            self._warn(
                f"ignoring {where} ({shown!r}): syncer.namespace is not set in the config, "
                "so the agent may not choose a Space; set syncer.namespace or syncer.space_id"
            )
            return None
        if chosen.split("/", 1)[0] != self.namespace:
            self._warn(
                f"ignoring {where}: {shown!r} is outside the namespace {self.namespace!r} "
                "the syncer may publish to (the sandbox can name a Space, not an account)"
            )
            return None
        self._last_warning = None
        return chosen
