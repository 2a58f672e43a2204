"""State on Modal: the token store, usage totals, the run registry and the app's own state.

All are `modal.Dict`s, written by the launcher with the user's credentials and read by the
proxy inside Modal:

    ml-agent-runs      run id -> RunRecord dict           (every app: `ps` lists them all)
    <app>-tokens       sha256(token) -> TokenRecord dict  (the proxy verifies tokens here)
    <app>-usage        run id -> usage totals             (the proxy adds, `ps` reads cost)
    <app>-state        "app_hash", "proxy_secret", "syncer_heartbeat", "syncer_call_id",
                       KEY_REFUSED, "token:<run>", "stdin:<run>"
    <app>-sync         "<volume>/<project>" -> last upload (the syncer and sync_now share it)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ml_agent.config.types import APP_DICT_SUFFIXES
from ml_agent.contracts import RunRecord, TokenRecord
from ml_agent.syncer.scan import Signature
from ml_agent.syncer.state import Uploaded

if TYPE_CHECKING:
    import modal

REGISTRY_DICT = "ml-agent-runs"
#: The proxy's last refusal by the upstream of its key, in `<app>-state`:
#: {"ts", "status", "type", "message"} (no key); the runs live at `ts` end on it.
KEY_REFUSED = "proxy_key_refused"


# The suffixes are listed in APP_DICT_SUFFIXES, against which the config checks app names.
TOKENS, USAGE, STATE, SYNC = APP_DICT_SUFFIXES


def tokens_dict_name(app: str) -> str:
    return f"{app}{TOKENS}"


def usage_dict_name(app: str) -> str:
    return f"{app}{USAGE}"


def state_dict_name(app: str) -> str:
    return f"{app}{STATE}"


def sync_dict_name(app: str) -> str:
    return f"{app}{SYNC}"


def named_dict(name: str) -> modal.Dict:
    import modal

    return modal.Dict.from_name(name, create_if_missing=True)


class ModalTokenStore:
    """`contracts.TokenStore` on a modal.Dict (the proxy caches reads on its side)."""

    nonblocking = False  # every call is a network round trip: the proxy runs it off-loop

    def __init__(self, store: modal.Dict) -> None:
        self._dict = store

    @classmethod
    def for_app(cls, app: str) -> ModalTokenStore:
        return cls(named_dict(tokens_dict_name(app)))

    def get(self, token_hash: str) -> TokenRecord | None:
        data = self._dict.get(token_hash)
        return TokenRecord.from_dict(data) if data else None

    def put(self, token_hash: str, record: TokenRecord) -> None:
        self._dict[token_hash] = record.to_dict()


class ModalUsageSink:
    """`contracts.UsageSink` on a modal.Dict.

    modal.Dict has no atomic add: a lock per run serializes the read-modify-write of that
    run's totals inside one process, and the proxy runs as a single container
    (`max_containers=1`), so no update is lost. Different runs' updates (two round trips
    each) go on in parallel: one lock for all of them halved the proxy's throughput with
    100 agents (bench/proxy_fleet.py).
    """

    nonblocking = False

    def __init__(self, store: modal.Dict) -> None:
        self._dict = store
        self._lock = threading.Lock()  # guards _locks
        self._locks: dict[str, threading.Lock] = {}

    @classmethod
    def for_app(cls, app: str) -> ModalUsageSink:
        return cls(named_dict(usage_dict_name(app)))

    def _run_lock(self, run_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(run_id, threading.Lock())

    def add(self, run_id: str, usage: dict[str, float]) -> dict[str, float]:
        with self._run_lock(run_id):
            totals = dict(self._dict.get(run_id) or {})
            for key, value in usage.items():
                totals[key] = totals.get(key, 0) + value
            self._dict[run_id] = totals
            return totals

    def get(self, run_id: str) -> dict[str, float]:
        return dict(self._dict.get(run_id) or {})


class RunRegistry:
    """What `ps` lists: every run launched on Modal, finished ones included."""

    def __init__(self, store: modal.Dict | None = None) -> None:
        self._dict = store if store is not None else named_dict(REGISTRY_DICT)

    def put(self, record: RunRecord) -> None:
        self._dict[record.run_id] = record.to_dict()

    def get(self, run_id: str) -> RunRecord | None:
        data = self._dict.get(run_id)
        return RunRecord.from_dict(data) if data else None

    def all(self) -> list[RunRecord]:
        records = [RunRecord.from_dict(v) for _, v in self._dict.items()]
        return sorted(records, key=lambda r: (r.created_at, r.run_id), reverse=True)


class AppState:
    """Small facts about a deployed app: which app_hash is deployed, the syncer's pulse."""

    def __init__(self, app: str) -> None:
        self._dict = named_dict(state_dict_name(app))

    def get(self, key: str, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self._dict[key] = value

    def forget(self, key: str) -> None:
        self._dict.pop(key, None)


class ModalSyncState:
    """`ml_agent.syncer.state.SyncState` on a modal.Dict: what the syncer has uploaded.

    The long-running `syncer` and the final `sync_now` of every `stop` run in different
    containers; sharing this state is what lets a final sync upload only what changed.
    Reads come from a local copy that `refresh()` reloads in one round trip (the syncer
    calls it before every scan, so an idle cycle costs one RPC, not one per project);
    `put` writes through. Keys carry the volume name: a redeploy onto another trackio
    volume trusts none of the old records. Values are plain JSON-like data (no pickled
    classes), and a damaged value only costs one more upload.
    """

    def __init__(self, store: modal.Dict, volume: str) -> None:
        self._dict = store
        self._prefix = f"{volume}/"
        self._records: dict[str, Uploaded] = {}

    @classmethod
    def for_app(cls, app: str, volume: str) -> ModalSyncState:
        return cls(named_dict(sync_dict_name(app)), volume)

    def refresh(self) -> None:
        """Reload every record of this volume (another container may have uploaded)."""
        records = {}
        for key, value in self._dict.items():
            if isinstance(key, str) and key.startswith(self._prefix):
                record = _uploaded(value)
                if record is not None:
                    records[key[len(self._prefix):]] = record
        self._records = records

    def get(self, project: str) -> Uploaded | None:
        return self._records.get(project)

    def put(self, project: str, record: Uploaded) -> None:
        self._dict[self._prefix + project] = {
            "signature": record.signature.to_json(),
            "space_id": record.space_id,
            "digest": record.digest,
        }
        self._records[project] = record


def _uploaded(value: Any) -> Uploaded | None:
    try:
        return Uploaded(
            Signature.from_json(value["signature"]), str(value["space_id"]),
            str(value.get("digest", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
