"""The Modal backend: a Plan becomes an image, volumes, secrets, a sandbox, a proxy, a syncer.

    builder.py   Plan -> modal objects and Sandbox.create arguments (pure, offline)
    app.py       the deployed app: proxy web endpoint and syncer functions (settings by env)
    stores.py    token store, usage, run registry, app state on modal.Dict
    backend.py   ModalBackend: up, events, send, logs, ps, stop

Importing this package does not import modal; the backend imports it when first used.
"""

from ml_agent.backends.modal.backend import ModalBackend

__all__ = ["ModalBackend"]
