"""The local backend: one machine, a bubblewrap sandbox, a supervisor process per run.

    image.py       host Python and apt checks; the pip layers' cached virtualenv
    volumes.py     $ML_AGENT_HOME/volumes/<name>/
    envfiles.py    $ML_AGENT_HOME/secrets/<name>.env; the proxy's key
    sandbox.py     the bwrap argv (pure) and the host layout it binds
    supervisor.py  the per-run process: proxy, syncer, sandbox, timeout, run.json
    registry.py    $ML_AGENT_HOME/runs/<run id>/
    backend.py     LocalBackend (the Backend protocol)
"""

from ml_agent.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
