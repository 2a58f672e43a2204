"""The Modal backend: a Plan becomes an image, volumes, secrets, a sandbox, a proxy, a syncer.

    builder.py   Plan -> modal objects and Sandbox.create arguments (pure, offline)
    app.py       the deployed app: proxy web endpoint and syncer functions (settings by env)
    stores.py    token store, usage, run registry, app state on modal.Dict
    backend.py   ModalBackend: up, events, send, logs, ps, stop
    stdio.py     the sandbox's stdin (one numbered writer per run) and merged output
    errors.py    every modal error class as a message that says what to do
    results.py   the run folder on the data volume: result.json, run.json, the event log

Importing this package does not import modal; the backend imports it when first used.
"""

from ml_agent.backends.modal.backend import ModalBackend

__all__ = ["ModalBackend"]
