"""The bwrap argv (pure) and the sandbox itself (real bubblewrap): env, binds, network."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from ml_agent.backends.local import bwrap, sandbox
from ml_agent.backends.local.sandbox import (
    VENV_DEST,
    HostLayout,
    build_argv,
    env_args,
    sandbox_env,
    start,
)
from ml_agent.plan import EnvLayer
from tests.local.helpers import host_cmdlines, layout, local_plan, with_network

LAUNCH_ENV = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "ANTHROPIC_API_KEY": "mla-run-x"}


def _host(**changes: object) -> HostLayout:
    base = HostLayout(
        bwrap="/usr/bin/bwrap",
        python_prefix="/opt/py/3.11.7",
        python_hidden=("/opt/py/3.11.7/lib/python3.11/site-packages",),
        venv="/h/envs/abc",
        volumes={"data": "/h/volumes/sandbox-data", "trackio": "/h/volumes/sandbox-trackio"},
        home="/h/runs/r/home",
        workdir="/h/runs/r/work",
        system={"/usr": None, "/bin": "usr/bin", "/lib": "usr/lib"},
        etc=("/etc/resolv.conf", "/etc/ssl"),
    )
    return dataclasses.replace(base, **changes)


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for i, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind", "--dev-bind"):
            out.append((arg, argv[i + 1], argv[i + 2]))
    return out


def _argv(plan=None, host=None, command=("true",)) -> list[str]:
    return build_argv(plan or local_plan(), host or _host(), command)


def test_argv_isolates_everything_but_the_network_and_drops_capabilities():
    argv = _argv()
    head = argv[: argv.index("--")]
    for flag in ("--unshare-all", "--share-net", "--die-with-parent", "--new-session",
                 "--clearenv"):
        assert flag in head
    assert head[head.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--") + 1 :] == ["true"]


def test_blocked_network_unshares_the_network_too():
    argv = _argv(with_network(local_plan(), "blocked"))
    assert "--unshare-all" in argv and "--share-net" not in argv


def test_argv_binds_only_what_it_names():
    binds = _binds(_argv())
    sources = {src for _, src, _ in binds}
    plan = local_plan()
    layers = {layer.src for layer in plan.image.layers if hasattr(layer, "src")}
    expected = {"/usr", "/etc/resolv.conf", "/etc/ssl", "/opt/py/3.11.7", "/h/runs/r/home",
                "/h/runs/r/work", "/h/volumes/sandbox-data", "/h/volumes/sandbox-trackio"}
    assert sources == expected | layers
    assert "/" not in sources and str(Path.home()) not in sources
    # The venv is an overlay (writable, changes discarded); the host's packages are hidden.
    argv = _argv()
    assert argv[argv.index("--overlay-src") + 1] == "/h/envs/abc"
    assert argv[argv.index("--tmp-overlay") + 1] == VENV_DEST
    assert argv[argv.index("/opt/py/3.11.7/lib/python3.11/site-packages") - 1] == "--tmpfs"


def test_argv_mounts_parents_first_and_layers_read_only():
    binds = _binds(_argv())
    dests = [dest for _, _, dest in binds]
    assert dests.index("/root") < dests.index("/root/.cache/huggingface/trackio")
    assert dests.index("/app") < dests.index("/app/.claude")
    flags = {dest: flag for flag, _, dest in binds}
    assert flags["/agent/agent.py"] == flags["/app/.claude"] == "--ro-bind"
    assert flags["/data"] == flags["/root"] == "--bind"


def test_read_only_volume_and_no_overlay_fallback():
    argv = _argv(local_plan("volumes.trackio.read_only=true"), _host(overlay=False))
    flags = {dest: flag for flag, _, dest in _binds(argv)}
    assert flags["/root/.cache/huggingface/trackio"] == "--ro-bind"
    assert flags[VENV_DEST] == "--ro-bind"


def test_gpu_devices_are_passed_through():
    argv = _argv(host=_host(gpu_devices=("/dev/nvidia0", "/dev/nvidiactl")))
    assert ("--dev-bind", "/dev/nvidia0", "/dev/nvidia0") in _binds(argv)


def test_gpu_devices_are_found_under_the_gpu_root():
    argv = _argv(host=_host(gpu_devices=("/dev/nvidia1",), gpu_root="/mnt/host"))
    assert ("--dev-bind", "/mnt/host/dev/nvidia1", "/dev/nvidia1") in _binds(argv)


def test_env_is_the_plans_only_with_the_venv_first_and_the_launcher_winning():
    plan = local_plan()
    layers = (EnvLayer(env={"ANTHROPIC_BASE_URL": "evil", "FOO": "bar"}), *plan.image.layers)
    plan = plan.model_copy(update={"image": plan.image.model_copy(update={"layers": layers})})
    env = sandbox_env(plan, LAUNCH_ENV, {"GITHUB_TOKEN": "gh"})
    assert env["PATH"].startswith(f"{VENV_DEST}/bin:")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["FOO"] == "bar" and env["GITHUB_TOKEN"] == "gh"
    words = env_args(env).split(b"\0")
    assert words[-1] == b"" and words[:3] == [b"--setenv", b"PATH", env["PATH"].encode()]
    assert {words[i + 1].decode(): words[i + 2].decode()
            for i in range(0, len(words) - 1, 3)} == env
    argv = _argv(plan)
    assert "--setenv" not in argv and "mla-run-x" not in argv and "gh" not in argv
    assert "--clearenv" in argv and argv[argv.index("--chdir") + 1] == "/app"


# -- the real sandbox ----------------------------------------------------------------------


def _start(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    with start(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def _run(plan, tmp_path, venv, script: str, *args: str, **changes) -> subprocess.CompletedProcess:
    host = layout(plan, tmp_path, venv, **changes)
    argv = build_argv(plan, host, ["python", "-c", script, *args])
    code, out, err = _start(argv, sandbox_env(plan, LAUNCH_ENV))
    return subprocess.CompletedProcess(argv, code, out, err)


def test_host_env_is_not_visible_inside(tmp_path, venv, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-secret")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-host")
    plan = local_plan()
    proc = _run(plan, tmp_path, venv, "import os, json; print(json.dumps(dict(os.environ)))")
    assert proc.returncode == 0, proc.stderr
    import json

    inside = json.loads(proc.stdout)
    assert inside == {**sandbox_env(plan, LAUNCH_ENV), "PWD": "/app"}  # bwrap sets PWD
    assert "sk-ant-host-secret" not in proc.stdout and "MODAL_TOKEN_SECRET" not in inside


#: Inside the sandbox: every /proc/<pid>/{environ,cmdline} it can read, then wait for EOF.
PROC_DUMP = """
import json, os, sys
seen = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    for name in ('environ', 'cmdline'):
        try:
            seen[pid + '/' + name] = open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')
        except OSError:
            pass
print(json.dumps(seen), flush=True)
sys.stdin.read()
"""


def test_no_secret_in_any_environ_or_cmdline_inside_or_on_the_host(tmp_path, venv, monkeypatch):
    # bwrap is PID 1 inside: it once ran with the launcher's environment (readable at
    # /proc/1/environ) and carried the sandbox's env as `--setenv` argv words.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "decoy-aws-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-decoy")
    token, secret = "mla-run-token-under-test", "gh-secret-value"
    plan = local_plan()
    env = sandbox_env(plan, {**LAUNCH_ENV, "ANTHROPIC_API_KEY": token}, {"GITHUB_TOKEN": secret})
    argv = build_argv(plan, layout(plan, tmp_path, venv), ["python", "-c", PROC_DUMP])
    with start(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        line = proc.stdout.readline()
        on_host = host_cmdlines()  # while the sandbox lives
        proc.stdin.close()
        assert proc.wait(30) == 0
    inside = json.loads(line)
    assert {"1/environ", "1/cmdline", "2/environ"} <= set(inside)  # bwrap and the command
    assert token in inside["2/environ"]  # the command has its env (the agent needs it)
    for where, text in inside.items():
        assert "decoy-aws-secret" not in text and "sk-ant-host-decoy" not in text, where
        if where.endswith("cmdline"):
            assert token not in text and secret not in text, where
    assert inside["1/environ"] == ""  # bwrap runs with an empty environment
    for pid, text in on_host.items():
        assert token not in text and secret not in text, pid


def test_paths_outside_the_binds_are_not_visible(tmp_path, venv, monkeypatch):
    home = tmp_path / "mlhome"
    secrets = home / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "anthropic-secret.env").write_text("ANTHROPIC_API_KEY=sk-ant-x\n")
    monkeypatch.setenv("ML_AGENT_HOME", str(home))
    plan = local_plan()
    probes = [str(secrets), str(Path.home() / ".modal.toml"), str(Path.home() / ".bashrc"),
              "/work", "/etc/shadow", str(tmp_path / "volumes"), str(venv)]
    script = (
        "import os, sys, json; print(json.dumps({p: os.path.exists(p) for p in sys.argv[1:]}))"
    )
    proc = _run(plan, tmp_path, venv, script, *probes)
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout) == dict.fromkeys(probes, False)


def test_volumes_home_workdir_and_tmp_are_writable_and_private(tmp_path, venv):
    marker = Path("/tmp") / f"ml-agent-host-{os.getpid()}"
    marker.write_text("host")
    plan = local_plan()
    script = (
        "import os; open('/data/x', 'w').write('d'); open('/root/.cache/huggingface/trackio/t',"
        " 'w').write('t'); open('/root/h', 'w').write('h'); open('/app/w', 'w').write('w');"
        f" open('/tmp/t', 'w').write('t'); open('{VENV_DEST}/added', 'w').write('v');"
        f" print(os.path.exists('{marker}'),"
        " os.getcwd(), os.getuid(), open('/app/.claude/../w').read())"
    )
    try:
        proc = _run(plan, tmp_path, venv, script)
    finally:
        marker.unlink()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "/app", "0", "w"]
    assert (tmp_path / "volumes" / "sandbox-data" / "x").read_text() == "d"
    assert (tmp_path / "volumes" / "sandbox-trackio" / "t").read_text() == "t"
    assert (tmp_path / "home" / "h").read_text() == "h"
    assert not (tmp_path / "home" / ".cache" / "huggingface" / "trackio" / "t").exists()
    assert not (venv / "added").exists()  # the venv's overlay is thrown away


def test_file_layers_are_read_only(tmp_path, venv):
    proc = _run(local_plan(), tmp_path, venv, "open('/agent/agent.py', 'a').write('x')")
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr


@pytest.mark.parametrize(("mode", "reachable"), [("open", True), ("blocked", False)])
def test_blocked_network_is_blocked(tmp_path, venv, server, mode, reachable):
    plan = with_network(local_plan(), mode)
    script = (
        "import socket\n"
        "try:\n"
        f"    print(socket.create_connection(('127.0.0.1', {server}), timeout=3).recv(5))\n"
        "except OSError as exc:\n"
        "    print('refused', exc)\n"
    )
    proc = _run(plan, tmp_path, venv, script)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout.strip() == "b'hello'") is reachable, proc.stdout


def test_probe_passes_here_and_explains_a_refusal():
    assert bwrap.probe(bwrap.choose().bwrap.path) is True  # overlays work in user namespaces
    message = bwrap.explain_failure("bwrap: No permissions to create new namespace, ...\n")
    assert "user namespaces" in message and "sysctl" in message


@pytest.fixture
def unix_server(tmp_path):
    """An echo server on a Unix socket (the proxy's stand-in): answers `echo:<what came>`."""
    path = tmp_path / "proxy.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                conn.sendall(b"echo:" + conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    srv.close()


def test_blocked_network_reaches_the_proxy_socket_over_the_bridge_only(
    tmp_path, venv, server, unix_server
):
    plan = with_network(local_plan(), "blocked")
    script = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', 8123), timeout=5)\n"
        "s.sendall(b'hi')\n"
        "print(s.recv(100).decode())\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {server}), timeout=3)\n"
        "    print('host loopback reached')\n"
        "except OSError as exc:\n"
        "    print('host loopback refused')\n"
    )
    host = layout(plan, tmp_path, venv, proxy_socket=str(unix_server))
    argv = build_argv(plan, host, sandbox.bridged(["python", "-c", script], 8123))
    code, out, err = _start(argv, sandbox_env(plan, LAUNCH_ENV))
    assert code == 0, err
    assert out.split("\n")[:2] == ["echo:hi", "host loopback refused"], out + err
