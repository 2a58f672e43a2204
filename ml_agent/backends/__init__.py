"""Backends turn a Plan into a running sandbox plus its proxy and syncer (DESIGN.md).

Both implement `Backend`; the CLI picks one by `plan.backend` (or `--backend`) through
`get_backend`, importing only the one it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ml_agent.contracts import RunRecord
    from ml_agent.plan import Plan


class Backend(Protocol):
    name: str

    def up(self, plan: Plan, *, task: str | None, detach: bool) -> RunRecord:
        """Launch (the Plan carries its LaunchPlan: run id, run dir); return once started.

        `task` runs the agent one-shot (`agent.py --one-shot`, the task on its stdin);
        None = interactive.
        `detach` means the run must outlive this process.
        """
        ...

    def events(self, run_id: str, *, follow: bool) -> Iterator[dict[str, Any]]:
        """The agent's protocol events from the start (callers de-duplicate by seq)."""
        ...

    def send(self, run_id: str, line: str) -> None:
        """Write one protocol input line to the agent's stdin."""
        ...

    def logs(self, run_id: str, *, follow: bool) -> Iterator[str]:
        """The run's raw output lines (stdout and stderr of the sandbox)."""
        ...

    def ps(self) -> list[RunRecord]:
        """Live and finished runs from the registry, newest first."""
        ...

    def stop(self, run_id: str) -> RunRecord:
        """Stop the sandbox, then a final metric sync (it sees the last rows); idempotent."""
        ...


def get_backend(name: str) -> Backend:
    if name == "local":
        from ml_agent.backends.local import LocalBackend

        return LocalBackend()
    if name == "modal":
        from ml_agent.backends.modal import ModalBackend

        return ModalBackend()
    raise ValueError(f"unknown backend {name!r}")
