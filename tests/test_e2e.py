"""The whole system on one machine, as a user runs it: `ml-agent up configs/local.yaml`.

The real CLI (a subprocess with an explicit env) starts the local backend: the supervisor,
the project's proxy on 127.0.0.1 holding the key, and the bubblewrap sandbox running the
real agent and the real bundled Claude CLI. The only scripted thing is the model: a fake
Anthropic API that accepts only the real key and asks for one Bash tool call, which writes
into /data, dumps the sandbox's env and logs a trackio metric.

The cached image (`$ML_AGENT_HOME/envs`) is shared across test runs through pytest's cache
folder, so only the first run on a machine builds it (minutes: claude-agent-sdk, trackio).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.anthropic import FakeAnthropic, main_loop, text, tool_use
from tests.local.helpers import host_cmdlines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REAL_KEY = "sk-ant-e2e-the-real-key-0123456789"
SECRET = "fake-upstream"
CLI = str(Path(sys.executable).with_name("ml-agent"))
ROOT = Path(__file__).resolve().parent.parent
TOOL_COMMAND = (
    "echo trained > /data/e2e.txt && env > /data/env.txt && "
    "python -c \"import trackio; trackio.init(project='e2e'); trackio.log({'loss': 1.0}); "
    "trackio.finish()\""
)


@pytest.fixture
def home(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Path:
    """A fresh ML_AGENT_HOME with the proxy's upstream key, sharing the cached images
    (across sessions in pytest's cache; within this one under `-p no:cacheprovider`)."""
    home = tmp_path / "ml-agent-home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / f"{SECRET}.env").write_text(f"ANTHROPIC_API_KEY={REAL_KEY}\n")
    cache = getattr(request.config, "cache", None)
    envs = (cache.mkdir("ml-agent-envs") if cache is not None
            else tmp_path_factory.getbasetemp() / "ml-agent-envs")
    envs.mkdir(exist_ok=True)
    (home / "envs").symlink_to(envs)
    return home


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(
            tool_use("Bash", {"command": TOOL_COMMAND}, match=main_loop),
            text("Trained; the metric is logged.", match=main_loop),
        )
        yield fake


def _env(home: Path, tmp_path: Path) -> dict[str, str]:
    """What a user's shell would have, minus anything Anthropic/Claude/Modal."""
    keep = ("PATH", "LANG", "LC_ALL", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT", "PYENV_ROOT", "PYENV_VERSION")
    env = {k: v for k, v in os.environ.items() if k in keep}
    user_home = tmp_path / "user"
    user_home.mkdir(exist_ok=True)
    return {**env, "HOME": str(user_home), "ML_AGENT_HOME": str(home), "COLUMNS": "120"}


def _cli(args: list[str], env: dict[str, str], timeout: float = 600, **kwargs):
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def _up_args(fake: FakeAnthropic, *extra: str) -> list[str]:
    return [
        "up", "configs/local.yaml", *extra,
        "--set", f"proxy.upstream={fake.url}",
        "--set", f"proxy.upstream_secret={SECRET}",
        "--set", 'sandbox.env.CLAUDE_CODE_MAX_RETRIES="1"',
    ]


def _check_run(home: Path, env: dict[str, str], fake: FakeAnthropic, output: str) -> str:
    """The assertions shared by the attached and the detached path; returns the run id."""
    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "succeeded" and run["backend"] == "local"
    run_id = run["run_id"]

    data = home / "volumes" / "sandbox-data"
    assert (data / "e2e.txt").read_text() == "trained\n"
    assert list((home / "volumes" / "sandbox-trackio").glob("e2e.db"))
    result = json.loads((data / "runs" / run_id / "result.json").read_text())
    assert result["status"] == "succeeded" and result["run_id"] == run_id
    assert result["proxy_usage"]["requests"] >= 2
    # The run's cost is the proxy's metering, in result.json and in `ps`; the agent's beside.
    assert result["cost_usd"] == result["proxy_usage"]["cost_usd"] == run["cost_usd"]
    assert result["agent_cost_usd"] == run["agent_cost_usd"] is not None

    inside = (data / "env.txt").read_text()
    token = json.loads((home / "runs" / run_id / "launch.json").read_text())["token"]
    assert f"ANTHROPIC_API_KEY={token}\n" in inside  # the run token, not the key
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:" in inside
    for secret in (REAL_KEY, token):
        assert secret not in output
    assert REAL_KEY not in inside
    # Every model call reached the fake through the proxy, with the real key injected.
    assert fake.message_calls() and {c.api_key for c in fake.message_calls()} == {REAL_KEY}
    return run_id


def test_up_task_runs_the_whole_chain(home, fake, tmp_path):
    env = _env(home, tmp_path)
    proc = _cli([*_up_args(fake, "--task", "train it and log the loss")], env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Trained; the metric is logged." in proc.stdout
    assert "▸ Bash" in proc.stdout
    run_id = _check_run(home, env, fake, output)
    assert f"run {run_id} succeeded · $" in proc.stdout  # one summary line, then where it is
    assert f"results: {home}/volumes/sandbox-data/runs/{run_id}/result.json" in proc.stderr


def test_up_detach_then_attach(home, fake, tmp_path):
    env = _env(home, tmp_path)
    proc = _cli([*_up_args(fake, "--task", "train it and log the loss", "--detach")], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = proc.stdout.strip()
    assert f"ml-agent attach {run_id}" in proc.stderr

    attached = _cli(["attach", run_id], env)
    output = proc.stdout + proc.stderr + attached.stdout + attached.stderr
    assert attached.returncode == 0, output
    assert attached.stdout.count("Trained; the metric is logged.") == 1  # de-duplicated
    assert _check_run(home, env, fake, output) == run_id
    logs = _cli(["logs", run_id], env)
    assert logs.returncode == 0 and '"type": "result"' in logs.stdout


def test_a_key_the_upstream_rejects_ends_the_run_naming_its_file(home, fake, tmp_path):
    # The Claude CLI would retry the 401 for minutes (CLAUDE_CODE_MAX_RETRIES=10 here); the
    # proxy sees it first and the supervisor ends the run, naming where the key came from.
    secret_file = home / "secrets" / f"{SECRET}.env"
    secret_file.write_text("ANTHROPIC_API_KEY=sk-ant-a-revoked-key-000000\n")
    env = _env(home, tmp_path)
    args = [*_up_args(fake, "--task", "train it"), "--set",
            'sandbox.env.CLAUDE_CODE_MAX_RETRIES="10"']
    proc = _cli(args, env)
    output = proc.stdout + proc.stderr
    assert "refused the key from" in output and str(secret_file) in output, output
    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    assert runs[0]["status"] == "failed"
    run_id = runs[0]["run_id"]
    log = (home / "runs" / run_id / "supervisor.log").read_text()
    assert f"refused the key from {secret_file}" in log
    result = json.loads((home / "volumes" / "sandbox-data" / "runs" / run_id
                         / "result.json").read_text())
    assert result["status"] == "failed" and str(secret_file) in result["error"]
    assert "sk-ant-a-revoked-key" not in output + log + json.dumps(result)


#: The Bash tool call of an agent turned against its user: read every /proc/<pid>/environ
#: and cmdline the sandbox shows, and try a server on the host's loopback (port PORT). It
#: writes what it saw to /data, then waits for the test to scan the host's command lines
#: while the run is live (at most a minute), and prints it (the model's view: the tool output).
PROC_SCAN = """python - <<'EOF'
import json, os, socket, time
seen = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    for name in ('environ', 'cmdline'):
        try:
            seen[pid + '/' + name] = open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')
        except OSError as exc:
            seen[pid + '/' + name] = f'<unreadable: {exc.strerror}>'
try:
    socket.create_connection(('127.0.0.1', PORT), timeout=3).close()
    host = 'reached'
except OSError:
    host = 'unreachable'
json.dump({'proc': seen, 'host': host}, open('/data/proc-scan.json', 'w'))
open('/data/scan-done', 'w').close()
deadline = time.monotonic() + 60
while not os.path.exists('/data/host-scanned') and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(seen))
print('host loopback:', host)
EOF"""
DECOY = "decoy-aws-secret-0123456789"
LAUNCHER_KEY = "sk-ant-launcher-env-key-0123456789"  # the launcher's own ANTHROPIC_API_KEY


def _grep_proc_as_another_user(patterns: list[str], files: str) -> list[str]:
    """The /proc files (`files`, a shell glob) in which another local user (`nobody`) finds
    one of `patterns` (given on stdin: a pattern on grep's own command line would match
    it). Run as root only; as another user, `files` are read as this user."""
    other = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    found = subprocess.run(
        ["/bin/sh", "-c", f"exec grep -s -l -a -F -f - {files}"], input="\n".join(patterns),
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, **other,
    )
    return found.stdout.split()


@pytest.mark.parametrize("network", ["open", "blocked"])
def test_no_secret_is_readable_in_the_sandbox_nor_on_any_command_line(home, tmp_path, network):
    listener = socket.create_server(("127.0.0.1", 0))  # a host loopback service
    env = {**_env(home, tmp_path), "AWS_SECRET_ACCESS_KEY": DECOY,
           "ANTHROPIC_API_KEY": LAUNCHER_KEY}
    data = home / "volumes" / "sandbox-data"
    command = PROC_SCAN.replace("PORT", str(listener.getsockname()[1]))
    with listener, FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(tool_use("Bash", {"command": command}, match=main_loop),
                    text("Scanned.", match=main_loop))
        args = _up_args(fake, "--task", "scan /proc", "--set", f"sandbox.network={network}")
        with open(tmp_path / "out", "w+") as out, subprocess.Popen(
            [CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            stdin=subprocess.DEVNULL,
        ) as proc:
            deadline = time.monotonic() + 600
            while not (data / "scan-done").exists() and proc.poll() is None:
                assert time.monotonic() < deadline, "the scan never ran"
                time.sleep(0.05)
            on_host = host_cmdlines()  # while the sandbox, the agent and the CLI live
            run_folder = str(next((home / "runs").iterdir()))
            seen_by_other = _grep_proc_as_another_user([run_folder], "/proc/[0-9]*/cmdline")
            secrets = [json.loads((Path(run_folder) / "launch.json").read_text())["token"],
                       REAL_KEY, LAUNCHER_KEY, DECOY]
            files = "/proc/[0-9]*/cmdline" + (" /proc/[0-9]*/environ" if os.geteuid() == 0
                                              else "")
            leaked_to_other = _grep_proc_as_another_user(secrets, files)
            (data / "host-scanned").touch()
            assert proc.wait(600) == 0, Path(out.name).read_text()
            out.seek(0)
            output = out.read()
        calls = fake.message_calls()

    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    run_id = runs[0]["run_id"]
    token = json.loads((home / "runs" / run_id / "launch.json").read_text())["token"]
    assert runs[0]["status"] == "succeeded"
    assert "sandbox: bubblewrap " in output  # `up` says which bwrap runs the sandbox
    assert ("127.0.0.1 and abstract Unix sockets" in output) is (network == "open")

    scan = json.loads((data / "proc-scan.json").read_text())
    inside = scan["proc"]
    assert scan["host"] == ("unreachable" if network == "blocked" else "reached")
    assert inside["1/environ"] == ""  # bwrap, PID 1 here, runs with an empty environment
    assert any(f"ANTHROPIC_API_KEY={token}" in v for k, v in inside.items()
               if k.endswith("environ"))  # the scan did read the agent's environment
    assert any("claude" in v for k, v in inside.items() if k.endswith("cmdline"))
    for where, text_ in inside.items():
        for secret in (REAL_KEY, LAUNCHER_KEY, DECOY):
            assert secret not in text_, where
        if where.endswith("cmdline"):
            assert token not in text_, where
    # What the model saw (the tool output) holds none of them either.
    tool_outputs = [json.dumps(c.json) for c in calls if "host loopback:" in json.dumps(c.json)]
    assert tool_outputs
    for seen in tool_outputs:
        assert REAL_KEY not in seen and LAUNCHER_KEY not in seen and DECOY not in seen

    # From the host, while the run lived: no command line holds the token or a key.
    assert any(str(home / "runs" / run_id) in v and "bwrap" in v for v in on_host.values())
    assert seen_by_other  # the other user does read command lines (bwrap's names the run)
    assert leaked_to_other == []
    for pid, cmdline in on_host.items():
        for secret in (token, REAL_KEY, LAUNCHER_KEY, DECOY):
            assert secret not in cmdline, pid
    assert token not in output and REAL_KEY not in output



def _user_texts(call) -> str:
    """Everything the request's messages say, as one string (the conversation so far)."""
    return json.dumps(call.json.get("messages", []))


def test_resume_continues_the_conversation_in_a_new_sandbox(home, tmp_path):
    # Leg 1 runs a task and ends; `up --resume` starts leg 2 on the same run: its first
    # model request carries leg 1's conversation (the Claude session, kept in the run
    # folder, continued), with a new run token and the budget left, and `ps` shows one run
    # with two legs.
    env = _env(home, tmp_path)
    data = home / "volumes" / "sandbox-data"
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(
            tool_use("Bash", {"command": "echo leg-one-marker > /data/leg1.txt"},
                     match=main_loop),
            text("First leg done: the marker is written.", match=main_loop),
        )
        budget = 5.0
        proc = _cli([*_up_args(fake, "--task", "write the marker"),
                     "--set", f"proxy.budget_usd={budget}"], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
        run_id = runs[0]["run_id"]
        first = json.loads((data / "runs" / run_id / "result.json").read_text())
        session = first["session_id"]
        token1 = json.loads((home / "runs" / run_id / "launch.json").read_text())["token"]
        cost1 = first["cost_usd"]
        assert session and cost1 and cost1 > 0
        calls_before = len(fake.message_calls())

        fake.script(
            tool_use("Bash", {"command": "env > /data/env2.txt"}, match=main_loop),
            text("Second leg done.", match=main_loop),
        )
        resumed = _cli(["up", "--resume", run_id, "--task", "now continue"], env)
        output = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, output
        assert "Second leg done." in resumed.stdout
        assert "First leg done" not in resumed.stdout  # the earlier leg is not replayed
        assert f"run {run_id} resumed (leg 2)" in resumed.stderr

        leg2 = [c for c in fake.message_calls()[calls_before:] if main_loop(c)]
        assert leg2, "leg 2 made no model request"
        said = _user_texts(leg2[0])
        # The conversation continued: leg 1's task, tool call and answer, then the new task.
        for earlier in ("write the marker", "leg-one-marker", "First leg done"):
            assert earlier in said, said
        assert "now continue" in said
        assert {c.api_key for c in fake.message_calls()} == {REAL_KEY}

    runs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)
    assert [r["run_id"] for r in runs] == [run_id]  # one run, not two
    run = runs[0]
    assert run["status"] == "succeeded"
    assert [leg["status"] for leg in run["legs"]] == ["succeeded", "succeeded"]
    assert len({leg["sandbox_id"] for leg in run["legs"]}) == 2
    assert all(leg["started_at"] <= leg["ended_at"] for leg in run["legs"])

    token2 = json.loads((home / "runs" / run_id / "launch.json").read_text())["token"]
    inside = (data / "env2.txt").read_text()
    assert token2 != token1 and f"ANTHROPIC_API_KEY={token2}\n" in inside
    assert f"ML_AGENT_RESUME_SESSION={session}\n" in inside
    left = float(inside.split("ML_AGENT_BUDGET_USD=")[1].split()[0])
    assert left == pytest.approx(budget - cost1, abs=1e-5)
    # The run's cost is the proxy's metering over both legs.
    result = json.loads((data / "runs" / run_id / "result.json").read_text())
    assert result["cost_usd"] == pytest.approx(run["cost_usd"])
    assert result["cost_usd"] > cost1
    assert token1 not in output and token2 not in output
    table = _cli(["ps", "--backend", "local"], env).stdout
    assert "LEGS" in table


@pytest.mark.parametrize("end", ["crash", "stop"])
def test_resume_after_a_crash_or_a_stop_mid_tool_call(home, tmp_path, end):
    # The run ends mid-tool-call. A crash (the supervisor and its sandbox killed): no final
    # result.json, no session id in it, so `up --resume` continues the newest session under
    # the run's claude/projects folder. A stop: the agent records its session as it ends.
    import signal

    env = _env(home, tmp_path)
    data = home / "volumes" / "sandbox-data"
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(
            tool_use("Bash", {"command": "touch /data/long-started && sleep 300"},
                     match=main_loop),
        )
        proc = _cli([*_up_args(fake, "--task", "start the crash-marker job", "--detach")],
                    env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = proc.stdout.strip()
        deadline = time.monotonic() + 300
        while not (data / "long-started").exists():
            assert time.monotonic() < deadline, "the tool call never started"
            time.sleep(0.1)
        if end == "stop":
            assert _cli(["stop", run_id], env).returncode == 0
        else:
            pid = int((home / "runs" / run_id / "supervisor.pid").read_text())
            os.killpg(pid, signal.SIGKILL)  # supervisor, bwrap, agent: the whole session
            while Path(f"/proc/{pid}").exists():
                time.sleep(0.05)
        session = json.loads((data / "runs" / run_id / "result.json").read_text())[
            "session_id"]
        assert (session is None) is (end == "crash")

        fake.script(text("Picked up where we left off.", match=main_loop))
        calls_before = len(fake.message_calls())
        resumed = _cli(["up", "--resume", run_id, "--task", "carry on"], env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "Picked up where we left off." in resumed.stdout
        leg2 = [c for c in fake.message_calls()[calls_before:] if main_loop(c)]
        said = _user_texts(leg2[0])
        assert "start the crash-marker job" in said and "carry on" in said, said

    run = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)[0]
    assert run["run_id"] == run_id and run["status"] == "succeeded"
    first = {"crash": "failed", "stop": "stopped"}[end]
    assert [leg["status"] for leg in run["legs"]] == [first, "succeeded"]


def test_resume_a_task_run_as_a_chat_on_a_terminal(home, tmp_path):
    # `up --resume RUN` without --task: the user chats with the agent that did the task.
    from tests.local.helpers import Terminal

    env = {**_env(home, tmp_path), "TERM": "xterm"}
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(text("Noted the word.", match=main_loop))
        proc = _cli([*_up_args(fake, "--task", "remember the word pelican")], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)[0][
            "run_id"]
        calls_before = len(fake.message_calls())
        fake.script(text("It was pelican.", match=main_loop))
        term = Terminal([CLI, "up", "--resume", run_id], env, ROOT)
        try:
            term.expect(f"run {run_id} resumed (leg 2)")
            term.expect("you>", timeout=300)
            term.send("which word was it?\r")
            term.expect("It was pelican.", timeout=300)
            term.expect("you>")
            term.send("\x04")  # Ctrl-D: the conversation (this leg) ends
            term.expect(f"run {run_id} ")
            assert term.close(300) == 0, term.seen
        finally:
            term.cleanup()
        leg2 = [c for c in fake.message_calls()[calls_before:] if main_loop(c)]
        said = _user_texts(leg2[0])
        for earlier in ("remember the word pelican", "Noted the word.", "which word was it?"):
            assert earlier in said, said
    assert "Noted the word." not in term.seen  # the first leg is not replayed
    legs = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)[0]["legs"]
    assert [leg["status"] for leg in legs] == ["succeeded", "succeeded"]


def test_resume_with_a_raised_budget_after_the_budget_is_spent(home, tmp_path):
    # Leg 1's one answer spends more than the run's $1 budget. `up --resume` refuses, naming
    # --budget; `--budget` at or below the cost is refused too; `--budget 3` starts leg 2,
    # whose proxy forwards its requests (the new budget reached the run token's record).
    env = _env(home, tmp_path)
    with FakeAnthropic(keys={REAL_KEY}) as fake:
        fake.script(text("All of the budget, spent.", match=main_loop,
                         usage={"output_tokens": 100_000}))  # $1.50 at Sonnet's price
        proc = _cli([*_up_args(fake, "--task", "spend it"), "--set", "proxy.budget_usd=1"],
                    env)
        assert "All of the budget, spent." in proc.stdout, proc.stdout + proc.stderr
        run = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)[0]
        run_id, cost1 = run["run_id"], run["cost_usd"]
        assert run["status"] == "failed" and cost1 >= 1.5  # the agent: "Reached maximum budget"

        spent = _cli(["up", "--resume", run_id, "--task", "more"], env)
        assert spent.returncode == 1
        assert "--budget USD" in " ".join(spent.stderr.split()), spent.stderr
        low = _cli(["up", "--resume", run_id, "--task", "more", "--budget", "1.5"], env)
        assert low.returncode == 1
        assert f"has already cost ${cost1:.4f}: --budget is the run's new total" in " ".join(
            low.stderr.split())

        fake.script(text("Carried on with the new budget.", match=main_loop))
        calls_before = len(fake.message_calls())
        raised = _cli(["up", "--resume", run_id, "--task", "more", "--budget", "3"], env)
        assert raised.returncode == 0, raised.stdout + raised.stderr
        assert "Carried on with the new budget." in raised.stdout
        assert [c for c in fake.message_calls()[calls_before:] if main_loop(c)]

    launch = json.loads((home / "runs" / run_id / "launch.json").read_text())
    assert launch["run_budget_usd"] == 3.0
    assert launch["plan"]["proxy"]["budget_usd"] == pytest.approx(3.0 - cost1, abs=1e-5)
    run = json.loads(_cli(["ps", "--json", "--backend", "local"], env).stdout)[0]
    assert [leg["status"] for leg in run["legs"]] == ["failed", "succeeded"]
    assert run["cost_usd"] > cost1
