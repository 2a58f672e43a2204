"""The exceptions ml-agent raises on purpose.

    MlAgentError          a user can act on it: printed without a traceback, exit 1
    ├── ConfigError       one or more config problems (carries the diagnostics)
    ├── BackendError      a backend could not do what was asked (message says how to fix it)
    │   └── SandboxError  the local sandbox could not start or was refused by the kernel
    │       └── GpusBusy  too few of this machine's GPUs are free now (a sweep waits)
    ├── RunNotFound       no run with that id in the registry
    ├── VolumeGone        a run's data volume (or its run folder) no longer exists
    └── UnsafeFile        an agent-written file is a link, not a regular file, or too big

Anything else is a bug and keeps its traceback. `ML_AGENT_DEBUG=1` shows tracebacks for
these too.
"""

from __future__ import annotations


class MlAgentError(Exception):
    """An error the user can act on; its message says what went wrong and the way out."""

    exit_code = 1


class ConfigError(MlAgentError):
    """The config is invalid; `diagnostics` holds every problem found, in file order."""

    def __init__(self, diagnostics: list) -> None:  # list[Diagnostic]
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class BackendError(MlAgentError):
    """A backend failed in a way the user can fix (missing token, secret, quota...)."""


class SandboxError(BackendError):
    """The local sandbox could not be set up or started."""


class GpusBusy(SandboxError):
    """The GPUs a local run asks for exist but other runs hold them now: waiting (the sweep
    driver does), stopping a run or sharing GPUs gets them."""


class RunNotFound(MlAgentError):
    """No run with that id (or prefix) in the registry."""


class VolumeGone(MlAgentError):
    """A run's data volume, or its folder on it, no longer exists (`results`, `pull`)."""


class UnsafeFile(MlAgentError):
    """A file the sandbox could write was refused unread (a link, a FIFO, past a size cap);
    see `ml_agent.fileio.read_untrusted`."""
