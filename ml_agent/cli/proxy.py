"""`ml-agent proxy serve` / `proxy token`: run the Anthropic proxy yourself, mint run tokens."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import typer

from ml_agent.contracts import TokenRecord, ml_agent_home
from ml_agent.errors import MlAgentError

ANTHROPIC = "https://api.anthropic.com"

SERVE_HELP = """Serve the Anthropic proxy: run tokens in, the real key (from --key-env) out.

Tokens: with `--tokens-file FILE`, any token minted into that file by `ml-agent proxy
token --tokens-file FILE` is accepted (the file holds only token hashes; it is re-read when
it changes, and a revocation takes effect within 30 s). Without it, one token is minted at
start and printed once on stdout. Clients use the token as their ANTHROPIC_API_KEY and
`http://HOST:PORT` as ANTHROPIC_BASE_URL.

Examples:

    ml-agent proxy serve --port 8082                      # mints and prints one token
    ml-agent proxy serve --tokens-file tokens.json --prefix /anthropic
    ml-agent proxy serve --upstream https://llm.example.com --key-env EXAMPLE_KEY
"""

TOKEN_HELP = """Mint a run token: printed once on stdout; only its hash is stored.

The hash, run id, expiry and budget go to --tokens-file (default
`$ML_AGENT_HOME/proxy-tokens.json`), which `ml-agent proxy serve --tokens-file` reads.

Examples:

    ml-agent proxy token --run-id demo --ttl 8h --budget 5
    ml-agent proxy token --tokens-file tokens.json --ttl 30m
"""

def parse_ttl(text: str) -> float:
    """`--ttl` in the config's duration shorthand (`90s`, `30m`, `1h`, `1h30m`, seconds)."""
    from ml_agent.config.types import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise MlAgentError(f"--ttl: {exc}") from None


def default_tokens_file() -> Path:
    return ml_agent_home() / "proxy-tokens.json"


class FileTokenStore:
    """A TokenStore in a JSON file `{sha256(token): TokenRecord}`, re-read when it changes."""

    nonblocking = True  # a stat per lookup; the proxy caches lookups anyway

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, dict[str, Any]] = {}

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        # The inode too: a rewrite is a new file, maybe of the same size in the same tick.
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._records = json.loads(self.path.read_text() or "{}")
            self._stamp = stamp
        return self._records

    def get(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            data = self._load().get(token_hash)
        return TokenRecord.from_dict(data) if data else None

    def put(self, token_hash: str, record: TokenRecord) -> None:
        """Add a record. Other processes (`proxy token`, run at once) may add theirs: the
        read-modify-write holds an flock on `<file>.lock`, and the file is replaced
        atomically, so a serving proxy never reads half of it."""
        from ml_agent.fileio import atomic_write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"),
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with self._lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._stamp = None  # re-read under the lock
                records = dict(self._load())
                records[token_hash] = record.to_dict()
                atomic_write_json(self.path, records, mode=0o600, indent=1)
                self._stamp = None
        finally:
            os.close(lock)  # releases the flock


def check_budget(budget: float | None) -> float | None:
    """`--budget`: a positive number of USD (or none); anything else is a usage error."""
    import math

    if budget is not None and not (budget > 0 and math.isfinite(budget)):
        raise typer.BadParameter(f"a budget is a positive number of USD (got {budget:g})",
                                 param_hint="'--budget'")
    return budget


def bind(host: str, port: int) -> Any:
    """The listening socket, bound now: a busy port is said before any token is minted."""
    import errno
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MlAgentError(f"port {port} on {host} is busy (another proxy?): stop it, or "
                               "choose another with --port") from None
        raise MlAgentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def mint(store: Any, run_id: str | None, ttl: float, budget: float | None) -> str:
    from ml_agent.contracts import hash_token, mint_token, new_run_id

    token = mint_token()
    record = TokenRecord(run_id=run_id or new_run_id(), expires_at=time.time() + ttl,
                         budget_usd=budget)
    store.put(hash_token(token), record)
    return token


def register(app: typer.Typer) -> None:
    proxy_app = typer.Typer(help="Run the Anthropic proxy yourself; mint run tokens.",
                            no_args_is_help=True)
    app.add_typer(proxy_app, name="proxy")

    @proxy_app.command("serve", help=SERVE_HELP)
    def serve_cmd(
        upstream: str = typer.Option(ANTHROPIC, help="The API the key belongs to."),
        port: int = typer.Option(8082, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        key_env: str = typer.Option("ANTHROPIC_API_KEY", help="Env variable holding the key."),
        tokens_file: Path | None = typer.Option(  # noqa: B008 - Typer's declaration style
            None, help="Accept tokens minted into it."),
        prefix: str = typer.Option("", help="Path prefix the proxy is served under."),
        budget: float | None = typer.Option(None, help="Budget (USD) of the minted token.",
                                            callback=check_budget),
        ttl: str = typer.Option("24h", help="Lifetime of the minted token."),
    ) -> None:
        import logging

        from ml_agent.proxy import MemoryTokenStore, MemoryUsageSink, create_app, serve

        key = os.environ.get(key_env, "")
        if not key:
            raise MlAgentError(f"${key_env} is not set: export the API key for {upstream} "
                               "there, or name another variable with --key-env")
        sock = bind(host, port)
        store: Any
        if tokens_file is not None:
            store = FileTokenStore(tokens_file)
        else:
            store = MemoryTokenStore()
            token = mint(store, "serve", parse_ttl(ttl), budget)
            typer.echo(token)  # shown once: stdout, for `TOKEN=$(... | head -1)`
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        try:
            app = create_app(upstream=upstream, api_key=key, tokens=store,
                             usage=MemoryUsageSink(), prefix=prefix)
        except ValueError as exc:
            raise MlAgentError(f"--upstream: {exc}") from None
        typer.echo(f"proxy for {upstream} on http://{host}:{port}{prefix}", err=True)
        serve(app, host=host, port=port, sock=sock)

    @proxy_app.command("token", help=TOKEN_HELP)
    def token_cmd(
        run_id: str | None = typer.Option(None, help="Run id (default: a new one)."),
        ttl: str = typer.Option("1h", help="Lifetime, e.g. 30m, 1h, 48h."),
        budget: float | None = typer.Option(None, help="Budget in USD (default: none).",
                                            callback=check_budget),
        tokens_file: Path | None = typer.Option(  # noqa: B008 - Typer's declaration style
            None, help="Where the hash goes (default: $ML_AGENT_HOME/proxy-tokens.json)."),
    ) -> None:
        store = FileTokenStore(tokens_file or default_tokens_file())
        typer.echo(mint(store, run_id, parse_ttl(ttl), budget))
