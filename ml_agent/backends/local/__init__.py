"""The local backend: one machine, a bubblewrap sandbox, a supervisor process per run.

    image.py       host Python and apt checks; the pip layers' cached virtualenv
    volumes.py     $ML_AGENT_HOME/volumes/<name>/
    envfiles.py    $ML_AGENT_HOME/secrets/<name>.env; the proxy's key
    sandbox.py     the bwrap argv (pure), the host layout it binds, starting it
    bwrap.py       which bwrap: candidates probed for the flags and the overlay we need
    bridge.py      run inside a sandbox without network: loopback -> the proxy's socket
    gpus.py        the machine's NVIDIA GPUs (the driver's files) and runs' leases on them
    proxying.py    the run's proxy (127.0.0.1, and a Unix socket for a blocked network)
    supervisor.py  the per-run process: proxy, syncer, sandbox, timeout, run.json
    registry.py    $ML_AGENT_HOME/runs/<run id>/
    backend.py     LocalBackend (the Backend protocol)
"""

from ml_agent.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
