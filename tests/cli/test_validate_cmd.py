"""`ml-agent validate`: paths, folders, globs, formats, exit codes, and a light start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_agent.cli import main
from ml_agent.contracts import CONFIGS_DIR

REPO = CONFIGS_DIR.parent
GOOD = """\
app: ok
image: {python: '3.11'}
volumes: {data: {name: d, mount: /data}}
proxy: {secret: anthropic}
syncer: {enabled: false}
"""
BAD = GOOD.replace("'3.11'", "3.10") + "sandbox:\n  gpus: T4\n"
HEAVY = ("modal", "httpx", "starlette", "trackio", "claude_agent_sdk", "uvicorn")


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """validate's fast path sets PYDANTIC_DISABLE_PLUGINS; keep it out of other tests."""
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", os.environ.get("PYDANTIC_DISABLE_PLUGINS", ""))
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "configs" / "nested").mkdir(parents=True)
    (tmp_path / "configs" / "good.yaml").write_text(GOOD)
    (tmp_path / "configs" / "nested" / "bad.yml").write_text(BAD)
    (tmp_path / "configs" / "notes.txt").write_text("not a config")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


BAD_TEXT = (
    'configs/nested/bad.yml:2:17: image.python: YAML read 3.10 as the number 3.1; quote it: '
    'python: "3.10"\n'
    "configs/nested/bad.yml:7:3: sandbox.gpus: unknown key 'gpus'; did you mean 'gpu'?\n"
)


def test_a_valid_file_exits_0(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "configs/good.yaml") == (0, "", "1 file valid\n")


def test_a_folder_is_searched_recursively_and_every_problem_printed(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "configs")
    assert code == 1
    assert out == BAD_TEXT
    assert err == "2 problems in 1 of 2 files\n"


def test_globs_match_files(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "configs/**/*.y*ml")[:2] == (1, BAD_TEXT)
    assert run(capsys, "configs/*.yaml")[0] == 0


def test_each_file_once_in_the_order_named(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--format", "json", "configs/good.yaml", "configs", "configs/*.yaml")
    assert json.loads(out)["checked"] == ["configs/good.yaml", "configs/nested/bad.yml"]


def test_json_format(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--format=json", "configs")
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert doc["valid"] is False
    assert doc["problems"][1] == {
        "file": "configs/nested/bad.yml",
        "line": 7,
        "col": 3,
        "key": "sandbox.gpus",
        "message": "unknown key 'gpus'; did you mean 'gpu'?",
    }


def test_github_format(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-f", "github", "configs/nested/bad.yml")
    assert code == 1
    assert out.splitlines()[1] == (
        "::error file=configs/nested/bad.yml,line=7,col=3,title=ml-agent validate::"
        "sandbox.gpus: unknown key 'gpus'; did you mean 'gpu'?"
    )


def test_set_overrides_apply_to_every_file(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "configs/good.yaml", "--set", "sandbox.gpu=A11")
    assert (code, out) == (1, "--set:1:13: sandbox.gpu: unknown GPU 'A11'; did you mean 'A10'?\n")
    assert run(capsys, "--set=sandbox.gpu=H100:2", "configs/good.yaml")[0] == 0


def test_a_problem_in_a_shared_base_is_printed_once(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "configs" / "good.yaml").write_text(GOOD + "sandbox: {gpu: A11}\n")
    for name in ("a", "b"):
        (tree / "configs" / f"{name}.yaml").write_text("extends: good.yaml\n")
    code, out, err = run(capsys, "configs/a.yaml", "configs/b.yaml", "configs/good.yaml")
    assert code == 1
    assert out == "configs/good.yaml:6:16: sandbox.gpu: unknown GPU 'A11'; did you mean 'A10'?\n"
    assert err == "1 problem in 3 of 3 files\n"


def test_unreadable_inputs_are_problems_not_crashes(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "configs" / "broken.yaml").write_bytes(b"app: [\xff\n")
    code, out, _ = run(capsys, "configs/broken.yaml")
    assert (code, out) == (1, "configs/broken.yaml:1:7: not valid UTF-8 (byte 0xff); save the "
                              "file as UTF-8\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: name at least one config file, folder or glob"),
        (["nope.yaml"], "error: no such file or folder: 'nope.yaml'"),
        (["nothing*.yaml"], "error: no files match 'nothing*.yaml'"),
        (["empty"], "error: no .yaml or .yml files in folder 'empty'"),
        (["--format", "xml", "configs"], "error: unknown format 'xml'; choose one of text, json"),
        (["--bogus", "configs"], "error: unknown option '--bogus'"),
        (["configs", "--set"], "error: option '--set' needs a value"),
    ],
)
def test_usage_errors_exit_2(
    tree: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert "ml-agent validate --help" in err


def test_the_shipped_configs_folder_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(CONFIGS_DIR))
    assert (code, out) == (0, ""), out
    assert err.endswith("files valid\n")


def _cli(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    script = (
        "import sys\nfrom ml_agent.cli import main\nrc = main(sys.argv[1:])\n"
        + code
        + "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )


def test_validate_imports_nothing_heavy() -> None:
    report = (
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
        "or m.split('.')[0] in ('typer', 'rich', 'click'))\nprint('HEAVY', heavy)\n"
    )
    proc = _cli("validate", "configs/a10.yaml", code=report)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout  # not even Typer or Rich on the fast path


def test_validate_help_teaches_without_heavy_imports() -> None:
    report = (
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy)\n"
    )
    proc = _cli("validate", "--help", code=report)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "ml-agent validate configs/a10.yaml" in proc.stdout
    assert "--format" in proc.stdout and "--set" in proc.stdout


def test_exit_codes_through_a_real_process(tree: Path) -> None:
    assert _cli("validate", str(tree / "configs" / "good.yaml")).returncode == 0
    bad = _cli("validate", str(tree / "configs"))
    assert bad.returncode == 1
    assert "sandbox.gpus: unknown key 'gpus'" in bad.stdout
    assert "Traceback" not in bad.stderr
    assert _cli("validate", str(tree / "nope")).returncode == 2


def test_the_pre_commit_hook_runs_validate_on_config_files() -> None:
    import re

    import yaml

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "ml-agent-validate")
    assert hook["entry"] == "ml-agent validate"
    assert hook["require_serial"] is True  # one start-up for all files
    pattern = re.compile(hook["files"])
    shipped = [f"configs/{p.name}" for p in CONFIGS_DIR.glob("*.yaml")]
    assert shipped and all(pattern.search(name) for name in shipped)
    assert not pattern.search("docs/mkdocs.yaml")


START_UP_REPORT = """\
import atexit, gc, sys
# registered before main(): runs after validate's own exit handler (atexit is LIFO)
atexit.register(lambda: print('FROZEN', gc.get_freeze_count() > 0))
from ml_agent.cli import main
rc = main(sys.argv[1:])
print('MODULES', sorted(m for m in ('difflib',) if m in sys.modules))
sys.exit(rc)
"""


@pytest.mark.parametrize(
    ("plugins", "modules"),
    [
        (None, "MODULES []"),  # nothing a valid config does not need
        ("some_plugin", "MODULES []"),  # the user's choice stands
    ],
)
def test_validate_start_up_skips_what_a_static_check_does_not_need(
    plugins: str | None, modules: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if plugins is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = plugins
    proc = subprocess.run(
        [sys.executable, "-c", START_UP_REPORT, "validate", "configs/a10.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert modules in proc.stdout
    # the interpreter's last garbage collection skips what pydantic built
    assert "FROZEN True" in proc.stdout


# -- untrusted configs (pull requests in CI): nothing outside the project, no env value ----

from tests.config.hostile import CASES, DECOY_ENV, ENV_NAME, Case, Hostile, leaked  # noqa: E402


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hostile:
    world = Hostile.build(tmp_path)
    monkeypatch.chdir(world.project)
    monkeypatch.setenv(ENV_NAME, DECOY_ENV)
    monkeypatch.delenv("ML_AGENT_ALLOW_OUTSIDE", raising=False)
    return world


def _location(case: Case, fmt: str, out: str) -> None:
    """The problem is reported at the case's file:line:col, in the format's own way."""
    file, _, pos = case.where.partition(":")
    line, _, col = pos.partition(":")
    if fmt == "text":
        assert out.startswith(f"{case.where}: "), out
    elif fmt == "json":
        problem = json.loads(out)["problems"][0]
        assert (problem["file"], problem["line"], problem["col"]) == (
            file, int(line or 0), int(col or 0)
        )
    else:
        props = f"file={file}" + (f",line={line},col={col}" if line else "")
        assert out.startswith(f"::error {props},"), out


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_hostile_config_prints_no_secret_and_names_the_place_the_rule_and_the_flag(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], case: Case, fmt: str
) -> None:
    code, out, err = run(capsys, "--format", fmt, case.config)
    assert code == 1
    assert leaked(out + err) == []
    _location(case, fmt, out)
    assert case.rule in out
    assert case.flag in out
    if case.name.startswith("env"):
        assert f"${{env:{ENV_NAME}}}" in out  # where the value came from, not the value


def test_allow_outside_admits_a_folder_but_its_content_is_never_quoted(
    hostile: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    allow = ("--allow-outside", str(hostile.secrets))
    for config in ("configs/creds_value.yaml", "configs/dotdot.yaml", "configs/symlink_file.yaml"):
        code, out, err = run(capsys, *allow, config)
        assert code == 1
        assert "outside the project tree" not in out  # admitted...
        assert leaked(out + err) == []  # ...but a secrets file is still never printed
    code, out, _ = run(capsys, *allow, "configs/creds_value.yaml")
    assert "../secrets/creds.json:1:2: token: unknown key '<not shown>'" in out
    assert "configs/creds_value.yaml:2:16: sandbox.gpu: unknown GPU '${token}'" in out
    _, out, _ = run(capsys, *allow, "configs/dotdot.yaml")
    assert out.endswith("the top level must be a mapping of keys (app:, image:, ...), not text\n")


def test_the_allow_outside_variable_is_the_flag_for_ci(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "configs/src_dir.yaml")[0] == 1
    monkeypatch.setenv("ML_AGENT_ALLOW_OUTSIDE", f"/nowhere{os.pathsep}{hostile.secrets}")
    assert run(capsys, "configs/src_dir.yaml") == (0, "", "1 file valid\n")


@pytest.mark.parametrize(
    "paths", [["configs"], ["configs/**/*.yaml"], ["configs/shared/leak.yaml"]]
)
def test_a_folder_symlinked_into_the_project_leads_nowhere(
    hostile: Hostile, capsys: pytest.CaptureFixture[str], paths: list[str]
) -> None:
    for fmt in ("text", "json", "github"):
        code, out, err = run(capsys, "-f", fmt, *paths)
        assert code == 1
        assert leaked(out + err) == []
    _, out, _ = run(capsys, "configs/shared/leak.yaml")
    assert out.startswith("configs/shared/leak.yaml: this file, through a symlink, is outside")
