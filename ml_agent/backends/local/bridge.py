"""Inside a sandbox whose network is blocked: 127.0.0.1:PORT relayed to the proxy's Unix socket.

    python bridge.py SOCKET PORT -- COMMAND [ARG...]

The sandbox has no network but its own loopback; the proxy is a Unix socket bound in. The
Claude CLI reaches ANTHROPIC_BASE_URL over TCP only, so this listens on the sandbox's
loopback, forks the relay, and execs COMMAND (the agent), which thus keeps its pid, stdin
and stdout. The relay dies with the sandbox (its pid namespace ends with the agent).

It runs inside the sandbox, bound there as a file: standard library only, nothing from
ml_agent (which the sandbox does not have).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (half-close), so either side may end first."""
    with contextlib.suppress(OSError):
        while data := src.recv(CHUNK):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, path: str) -> None:
    with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
        try:
            upstream.connect(path)
        except OSError as exc:
            print(f"bridge: cannot reach the proxy at {path}: {exc}", file=sys.stderr)
            return
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()


def serve(listener: socket.socket, path: str) -> None:
    while True:
        client, _ = listener.accept()
        # Streamed answers arrive as many small events: send each at once.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_relay, args=(client, path), daemon=True).start()


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: bridge.py SOCKET PORT -- COMMAND [ARG...]")
    path, port, command = argv[0], int(argv[1]), argv[3:]
    # Bound before the fork: the command's first connection cannot come too early.
    listener = socket.create_server(("127.0.0.1", port), backlog=64)
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)  # the agent's stdin and stdout stay its own
        os.dup2(null, 0)
        os.dup2(null, 1)
        try:
            serve(listener, path)
        finally:
            os._exit(1)
    listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
