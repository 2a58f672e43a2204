"""The loader on real YAML files: positions, extends, --set, ${...}, hostile input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_agent.config.interpolate import MAX_COPIED, MAX_REF_DEPTH
from ml_agent.config.loader import MAX_BYTES, LoadFailed, Source, load_source
from ml_agent.config.safe_yaml import MAX_DEPTH, MAX_VALUES, Loc, YamlProblem, parse


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, *overrides: str, env: dict[str, str] | None = None) -> Source:
    return load_source(path, overrides, env={} if env is None else env)


def failure(path: Path, *overrides: str) -> str:
    """The single fatal problem loading `path`, as the user sees it."""
    with pytest.raises(LoadFailed) as info:
        load(path, *overrides)
    assert len(info.value.diagnostics) == 1
    return str(info.value.diagnostics[0])


def problems(source: Source) -> list[str]:
    return [str(d) for d in source.problems]


# ---- positions -------------------------------------------------------------------------------


def test_every_key_and_value_has_its_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "app: x\nsandbox:\n  gpu: A10\n  env: {A: '1'}\nl: [a, b]\n")
    src = load(path)
    f = str(path)
    assert src.data == {"app": "x", "sandbox": {"gpu": "A10", "env": {"A": "1"}}, "l": ["a", "b"]}
    assert src.keys[("sandbox", "gpu")] == Loc(f, 3, 3)
    assert src.values[("sandbox", "gpu")] == Loc(f, 3, 8)
    assert src.values[("sandbox", "env", "A")] == Loc(f, 4, 12)
    assert src.values[("l", 1)] == Loc(f, 5, 8)
    # unknown paths fall back to the deepest known ancestor
    assert src.value_loc(("sandbox", "env", "nope", 3)) == Loc(f, 4, 8)


def test_keys_stay_text_and_values_get_yaml_types(tmp_path: Path) -> None:
    text = "on: yes\n1: 0x10\nnull: ~\nd: 2024-01-01\nf: 1.5\ns: '3.10'\nn: 3.10\nb: false\n"
    src = load(write(tmp_path, "c.yaml", text))
    assert src.data == {
        "on": True,
        "1": 16,
        "null": None,
        "d": "2024-01-01",  # no field wants a date: it stays the text that was written
        "f": 1.5,
        "s": "3.10",
        "n": 3.1,
        "b": False,
    }


def test_plain_values_keep_their_type_when_seen_again() -> None:
    # the composer remembers what type a plain text has: the second file must agree
    text = "a: yes\nb: '1'\nc: 1\nd: ~\ne: x\nf: 1.5e+3\ng: !!str 1\nh: 0x1f\ni: 1e3\n"
    first, second = parse(text, "one.yaml").data, parse(text, "two.yaml").data
    assert first == second == {
        "a": True, "b": "1", "c": 1, "d": None, "e": "x", "f": 1500.0, "g": "1", "h": 31,
        "i": "1e3",  # YAML 1.1, as PyYAML reads it: a float needs a dot
    }


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load(write(tmp_path, "c.yaml", b"\xef\xbb\xbfapp: x\n")).data == {"app": "x"}


def test_anchors_aliases_and_merge_keys_work_within_budget(tmp_path: Path) -> None:
    text = "base: &b {a: 1, l: [x]}\ncopy: *b\nmerged:\n  <<: *b\n  a: 2\n"
    src = load(write(tmp_path, "c.yaml", text))
    assert src.data["copy"] == {"a": 1, "l": ["x"]}
    assert src.data["merged"] == {"a": 2, "l": ["x"]}
    assert src.values[("copy", "l", 0)] == src.values[("base", "l", 0)]  # where it is written
    assert src.values[("merged", "a")].line == 5
    src.data["copy"]["l"].append("y")
    assert src.data["base"]["l"] == ["x"]  # an alias is a copy, not a shared object


def test_merge_keys_take_the_first_supplier_and_keep_positions(tmp_path: Path) -> None:
    text = "b: &b {a: 1, l: [x]}\no: &o {a: 9, z: 3}\nm:\n  <<: [*b, *o]\n  k: v\n"
    path = write(tmp_path, "c.yaml", text)
    src = load(path)
    assert src.data["m"] == {"k": "v", "a": 1, "l": ["x"], "z": 3}
    assert src.values[("m", "a")] == Loc(str(path), 1, 11)
    assert src.values[("m", "z")] == Loc(str(path), 2, 17)
    assert not any("<<" in p for p in src.values)


def test_many_merges_stay_within_the_value_budget(tmp_path: Path) -> None:
    base = "b: &b {" + ", ".join(f"k{i}: {i}" for i in range(50)) + "}\n"
    text = base + "".join(f"m{i}: {{<<: *b}}\n" for i in range(2000))
    start = time.monotonic()
    assert "an alias bomb?" in failure(write(tmp_path, "c.yaml", text))
    assert time.monotonic() - start < 2


# ---- duplicate keys -------------------------------------------------------------------------


def test_duplicate_keys_are_errors_at_every_level(tmp_path: Path) -> None:
    text = "app: a\nsandbox:\n  gpu: A10\n  gpu: T4\napp: b\n"
    path = write(tmp_path, "c.yaml", text)
    assert problems(load(path)) == [
        f"{path}:4:3: sandbox.gpu: duplicate key 'gpu' (first defined at line 3); "
        "YAML keeps only one: remove or merge them",
        f"{path}:5:1: app: duplicate key 'app' (first defined at line 1); "
        "YAML keeps only one: remove or merge them",
    ]


def test_duplicate_keys_in_flow_mappings(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "v: {name: a, name: b}\n")
    assert problems(load(path)) == [
        f"{path}:1:14: v.name: duplicate key 'name' (first defined at line 1); "
        "YAML keeps only one: remove or merge them"
    ]


# ---- extends --------------------------------------------------------------------------------


def test_extends_chain_deep_merges_maps_and_replaces_lists(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # one project: mid/ may extend the file above it
    write(tmp_path, "root.yaml", "app: root\nsandbox: {gpu: T4, timeout: 1h}\nl: [1, 2]\n")
    write(tmp_path, "mid/mid.yaml", "extends: ../root.yaml\nsandbox:\n  gpu: A10\nl: [3]\n")
    top = write(tmp_path, "mid/top.yaml", "extends: mid.yaml\nsandbox:\n  workdir: /app\n")
    src = load(top)
    assert src.data == {
        "app": "root",
        "sandbox": {"gpu": "A10", "timeout": "1h", "workdir": "/app"},
        "l": [3],
    }
    # inherited keys point into the file that defined them; the names are as a user sees them
    root, mid = str(tmp_path / "root.yaml"), str(tmp_path / "mid" / "mid.yaml")
    assert src.values[("sandbox", "timeout")] == Loc(root, 2, 29)
    assert src.values[("sandbox", "gpu")] == Loc(mid, 3, 8)
    assert src.values[("sandbox", "workdir")] == Loc(str(top), 3, 12)
    assert src.values[("l", 0)] == Loc(mid, 4, 5)
    assert ("l", 1) not in src.values  # the replaced list's old items are gone
    assert src.files[:3] == [str(top), mid, root]
    assert "extends" not in src.data


def test_extends_display_names_are_relative_like_the_top_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "configs/base.yaml", "app: x\nsandbox: {gpu: [}\n")
    write(tmp_path, "configs/a.yaml", "extends: base.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert failure(Path("configs/a.yaml")).startswith("configs/base.yaml:2:")


def test_extends_null_means_none(tmp_path: Path) -> None:
    assert load(write(tmp_path, "a.yaml", "extends:\napp: x\n")).data == {"app": "x"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "extends: a.yaml\n"}, "a.yaml:1:10: extends: extends cycle: a.yaml -> a.yaml"),
        (
            {"a.yaml": "x: 1\nextends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
            "b.yaml:1:10: extends: extends cycle: a.yaml -> b.yaml -> a.yaml",
        ),
        (
            {"a.yaml": "app: x\nextends: nope/base.yaml\n"},
            "a.yaml:2:10: extends: cannot use 'nope/base.yaml': no such file",
        ),
        (
            {"a.yaml": "extends: sub\n", "sub/x.yaml": "app: x\n"},
            "a.yaml:1:10: extends: cannot use 'sub': is a directory;",
        ),
        (
            {"a.yaml": "extends: [b.yaml]\n"},
            "a.yaml:1:10: extends: must name a YAML file, e.g. 'extends: base.yaml'",
        ),
        (
            {"a.yaml": "extends: ${env:BASE}\n"},
            "a.yaml:1:10: extends: is read before ${...} is resolved: name the file",
        ),
        (
            {"a.yaml": "extends: b.yaml\n", "b.yaml": "- a list\n"},
            "b.yaml:1:1: the top level must be a mapping of keys (app:, image:, ...), not a list",
        ),
    ],
)
def test_extends_errors_point_at_the_extends_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    monkeypatch.chdir(tmp_path)
    assert failure(Path("a.yaml")).startswith(message)


def test_an_error_in_a_base_file_points_into_the_base_file(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "app: x\nsandbox:\n  gpu: A10\n  gpu: T4\n")
    src = load(write(tmp_path, "a.yaml", "extends: base.yaml\n"))
    assert problems(src)[0].startswith(f"{tmp_path}/base.yaml:4:3: sandbox.gpu: duplicate key")


# ---- --set ----------------------------------------------------------------------------------


def test_set_parses_values_as_yaml_and_creates_missing_maps(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "sandbox: {gpu: T4, env: {A: x}}\nl: [a, b]\n")
    src = load(
        path,
        "sandbox.gpu=H100:2",
        "sandbox.timeout=90",
        "agent.allowed_tools=[Bash, Read]",
        "l.1=c",
        "sandbox.env={}",
    )
    assert src.data == {
        "sandbox": {"gpu": "H100:2", "env": {}, "timeout": 90},
        "l": ["a", "c"],
        "agent": {"allowed_tools": ["Bash", "Read"]},
    }
    assert src.values[("sandbox", "gpu")] == Loc("--set", 1, 13)
    assert src.values[("agent", "allowed_tools", 1)] == Loc("--set", 3, 28)
    assert ("sandbox", "env", "A") not in src.values
    assert src.problems == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sandbox.gpu", "--set:1:1: expected KEY=VALUE, e.g. sandbox.gpu=A100 (got 'sandbox.gpu')"),
        ("=A10", "--set:1:1: expected KEY=VALUE"),
        ("l.5=x", "--set:1:1: l: '5' is not an index of this list (2 items)"),
        ("sandbox..gpu=x", "--set:1:1: empty key in 'sandbox..gpu'"),
        ("l.²=x", "--set:1:1: l: '²' is not an index of this list (2 items)"),
        ("sandbox.gpu=[A10", "--set:1:17: YAML syntax error"),
        ("sandbox.gpu=!!python/name:os.system", "--set:1:13: sandbox.gpu: tag '!!python/name"),
    ],
)
def test_set_errors_are_located_on_the_command_line(
    tmp_path: Path, override: str, message: str
) -> None:
    src = load(write(tmp_path, "c.yaml", "sandbox: {gpu: T4}\nl: [a, b]\n"), override)
    assert len(src.problems) == 1
    assert str(src.problems[0]).startswith(message)


# ---- ${...} interpolation -------------------------------------------------------------------


def test_references_env_and_escapes(tmp_path: Path) -> None:
    text = """\
volumes:
  trackio: {mount: /root/trackio}
sandbox:
  timeout: 3600
  env:
    TRACKIO_DIR: ${volumes.trackio.mount}
    CHAINED: ${sandbox.env.TRACKIO_DIR}
    INSIDE: "dir=${sandbox.env.CHAINED}/x t=${sandbox.timeout}"
    SECONDS: ${sandbox.timeout}
    USER: ${env:ML_USER}
    DEFAULT: ${env:ML_NOPE:-fallback}
    EMPTY_DEFAULT: ${env:ML_NOPE:-}
    LITERAL: "$${not.a.ref}"
    FIRST: ${layers.0}
    BOOL: "on=${flag}"
layers: [pip, apt]
flag: true
copy: ${volumes}
"""
    src = load(write(tmp_path, "c.yaml", text), env={"ML_USER": "ada"})
    assert src.problems == []
    env = src.data["sandbox"]["env"]
    assert env == {
        "TRACKIO_DIR": "/root/trackio",
        "CHAINED": "/root/trackio",
        "INSIDE": "dir=/root/trackio/x t=3600",
        "SECONDS": 3600,  # a whole-string reference keeps the value's type
        "USER": "ada",
        "DEFAULT": "fallback",
        "EMPTY_DEFAULT": "",
        "LITERAL": "${not.a.ref}",
        "FIRST": "pip",
        "BOOL": "on=true",
    }
    assert src.data["copy"] == {"trackio": {"mount": "/root/trackio"}}


def test_references_see_the_merged_config_and_set(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "v: {mount: /data}\nenv: {D: '${v.mount}/hf'}\n")
    top = write(tmp_path, "a.yaml", "extends: base.yaml\nv: {mount: /mnt}\n")
    assert load(top).data["env"] == {"D": "/mnt/hf"}
    assert load(top, "v.mount=/other").data["env"] == {"D": "/other/hf"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${env:ML_NOPE}", "environment variable ML_NOPE is not set; set it, or give a default: "
         "'${env:ML_NOPE:-value}'"),
        ("${env:9x}", "'${env:9x}': '9x' is not an environment variable name"),
        ("${sandbx.gpu}", "'${sandbx.gpu}' refers to nothing: no 'sandbx' at the top level; "
         "did you mean 'sandbox'?"),
        ("${sandbox.gpus}", "'${sandbox.gpus}' refers to nothing: no 'gpus' in 'sandbox'; "
         "did you mean 'gpu'?"),
        ("x ${sandbox}", "'${sandbox}' is dict; only text, numbers and booleans can be inserted"),
        ("${sandbox.env.A", "unclosed '${' in '${sandbox.env.A'"),
        ("${}", "empty '${}'"),
        ("${sandbox.env.A.0}", "'${sandbox.env.A.0}' refers to nothing: no '0' in 'sandbox.env.A'"),
        ("${l.²}", "'${l.²}' refers to nothing: no '²' in 'l'"),
        ("${l.5}", "'${l.5}' refers to nothing: no '5' in 'l'"),
        ("${x}", "reference cycle: x -> x"),
    ],
)
def test_interpolation_errors_are_at_the_line(tmp_path: Path, value: str, message: str) -> None:
    text = f"sandbox:\n  gpu: T4\n  env: {{A: a}}\nx: '{value}'\nl: [a]\n"
    path = write(tmp_path, "c.yaml", text)
    src = load(path)
    assert len(src.problems) == 1
    assert str(src.problems[0]).startswith(f"{path}:4:4: x: {message}")
    assert ("x",) in src.poisoned


def test_reference_cycles_are_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "a: ${b}\nb: '${c}/x'\nc: ${a}\nd: ${a}\n")
    src = load(path)
    assert problems(src) == [f"{path}:1:4: a: reference cycle: a -> b -> c -> a"]
    assert {("a",), ("b",), ("c",), ("d",)} <= src.poisoned


# ---- hostile input --------------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = write(tmp_path, "c.yaml", "\n".join(lines) + "\n")
    start = time.monotonic()
    message = failure(path)
    assert time.monotonic() - start < 2
    assert f"aliases expand to more than {MAX_VALUES} values; refusing (an alias bomb?)" in message


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 10_000 + "]" * 10_000 + "\n", "- " * 10_000 + "x\n", "{a: " * 10_000],
    ids=["flow", "block", "unclosed"],
)
def test_deep_nesting_is_refused(tmp_path: Path, text: str) -> None:
    message = failure(write(tmp_path, "c.yaml", text))
    assert f"nested more than {MAX_DEPTH} levels deep" in message


def test_too_many_values_are_refused(tmp_path: Path) -> None:
    message = failure(write(tmp_path, "c.yaml", "a: [" + "1," * 50_000 + "]\n"))
    assert f"more than {MAX_VALUES} values" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "".join(f"a{i}: ${{a{i + 1}}}\n" for i in range(2000)) + "a2000: end\n",
            f"references chained more than {MAX_REF_DEPTH} deep",
        ),
        (
            "a0: " + "x" * 1000 + "\n"
            + "".join(f"a{i}: '" + f"${{a{i - 1}}}" * 10 + "'\n" for i in range(1, 12)),
            "interpolated text longer than 64 KiB",
        ),
        (
            "big: [" + "1," * 1000 + "]\n" + "copies:\n" + "  - ${big}\n" * 100,
            f"references copy more than {MAX_COPIED} values",
        ),
    ],
    ids=["deep-chain", "string-bomb", "copy-bomb"],
)
def test_interpolation_bombs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    start = time.monotonic()
    src = load(write(tmp_path, "c.yaml", text))
    assert time.monotonic() - start < 5
    assert message in " ".join(problems(src))


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    assert failure(path) == f"{path}: file is 50.0 MiB; a config may be at most 1.0 MiB"
    just_over = write(tmp_path, "over.yaml", "a: " + "x" * MAX_BYTES + "\n")
    assert "a config may be at most 1.0 MiB" in failure(just_over)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"app: x\nname: caf\xff\n", "2:10: not valid UTF-8 (byte 0xff); save the file as UTF-8"),
        (b"\xff\xfea\x00:\x00", "1:1: not valid UTF-8 (byte 0xff)"),
        (b"app: [x\n", "2:1: YAML syntax error: did not find expected ',' or ']' "
         "(while parsing a flow sequence that starts at 1:6)"),
        (b"a: b: c\n", "1:5: YAML syntax error: mapping values are not allowed in this context"),
        (b"a:\n\tb: 1\n", "2:1: YAML syntax error: found character that cannot start any token"),
        (b"a: \x01\n", "1:4: character '\\x01' is not allowed in YAML"),
        (b"a: 1\x00\n", "1:5: character '\\x00' is not allowed in YAML"),
        (b"", "1:1: the file is empty; a config is a mapping such as 'app: my-app'"),
        (b"# only a comment\n", "1:1: the file is empty"),
        (b"---\n", "1:1: the top level must be a mapping of keys (app:, image:, ...), not null"),
        (b"- a\n- b\n", "1:1: the top level must be a mapping of keys (app:, image:, ...), not a "
         "list"),
        (b"just text\n", "1:1: the top level must be a mapping of keys (app:, image:, ...), not "
         "text"),  # never the text itself: the file may be a key file
        (b"a: 1\n---\nb: 2\n", "2:1: more than one YAML document ('---'); a config is one"),
        (b"a: *nope\n", "1:4: a: alias '*nope' refers to no anchor defined before it"),
        (b"a: &x [1, *x]\n", "1:11: a[1]: alias '*x' refers to no anchor defined before it"),
        (b"? [a, b]\n: 1\n", "1:3: a key must be a plain value, not a list, mapping or alias"),
    ],
)
def test_hostile_bytes_get_a_clear_error(tmp_path: Path, text: bytes, message: str) -> None:
    path = write(tmp_path, "c.yaml", text)
    got = failure(path)
    assert message in got
    assert got.startswith(str(path))


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object:os.system {}\n",
        "a: !!python/object/apply:os.system [echo hacked]\n",
        "a: !!python/name:os.system\n",
        "a: !!binary aGk=\n",
        "a: !custom x\n",
        "a: !!set {x}\n",
    ],
)
def test_tags_other_than_plain_yaml_are_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "c.yaml", text)
    src = load(path)
    assert len(src.problems) == 1
    assert str(src.problems[0]).startswith(f"{path}:1:4: a: tag '!")
    assert "is not allowed; configs are plain YAML" in str(src.problems[0])
    assert ("a",) in src.poisoned


def test_plain_tags_are_fine(tmp_path: Path) -> None:
    src = load(write(tmp_path, "c.yaml", "a: !!str 3.10\nb: !!int '7'\nc: !!map {x: !!seq []}\n"))
    assert src.problems == []
    assert src.data == {"a": "3.10", "b": 7, "c": {"x": []}}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory; name a .yaml file"),
        (lambda p: (os.mkfifo(p), p)[1], "not a regular file"),
    ],
)
def test_paths_that_are_not_config_files(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path / "c.yaml")
    assert failure(path) == f"{path}: {message}" or failure(path).startswith(f"{path}: {message}")


def test_an_unreadable_file(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp())  # not under pytest's 0700 folder: another user gets in
    try:
        folder.chmod(0o755)
        path = write(folder, "c.yaml", "app: x\n")
        path.chmod(0)
        if os.geteuid() != 0:
            assert failure(path) == f"{path}: cannot read: permission denied"
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file, and setpriv is missing to drop privileges")
        code = (
            "import sys\nfrom ml_agent.config.loader import LoadFailed, load_source\n"
            "try:\n    load_source(sys.argv[1])\nexcept LoadFailed as exc:\n"
            "    print(exc.diagnostics[0])\n"
        )
        as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                     sys.executable, "-c"]
        repo = Path(__file__).parents[2]
        probe = subprocess.run([*as_nobody, "import ml_agent.config.loader"],
                               capture_output=True, timeout=60, cwd=repo)
        if probe.returncode != 0:  # e.g. a checkout under a 0700 folder (mktemp -d)
            pytest.skip(f"another user cannot import ml_agent from {repo}")
        proc = subprocess.run(
            [*as_nobody, code, str(path)],
            capture_output=True, text=True, timeout=60, cwd=repo,
        )
        assert proc.stdout == f"{path}: cannot read: permission denied\n", proc.stderr
    finally:
        shutil.rmtree(folder)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(
            ["a", "b", ":", " ", "  ", "\n", "-", "[", "]", "{", "}", ",", "&x", "*x", "<<",
             "!!str", "!!python/none", "'", '"', "?", "#", "|", ">", "---", "${a}", "1", "~",
             "\t", "%YAML 1.1", "\\", "é", "\x85"]
        ),
        max_size=40,
    )
)
def test_any_text_parses_or_gets_one_clear_problem(pieces: list[str]) -> None:
    text = "".join(pieces)
    try:
        doc = parse(text, "fuzz.yaml")
    except YamlProblem as exc:
        assert str(exc.diagnostic).startswith("fuzz.yaml")
    else:
        assert all(str(d).startswith("fuzz.yaml:") for d in doc.problems)


def test_real_paths_follow_symlinked_files_and_folders(tmp_path: Path) -> None:
    from ml_agent.config.loader import _realpath

    real = write(tmp_path, "real/c.yaml", "app: x\n")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "link.yaml").symlink_to(real)
    for path in (real, tmp_path / "linked" / "c.yaml", tmp_path / "real" / "link.yaml"):
        assert _realpath(path) == os.path.realpath(path) == str(real)
        assert load(path).path == real  # the folder a src is relative to
    other = write(tmp_path, "other/c.yaml", "app: y\n")
    (tmp_path / "linked").unlink()
    (tmp_path / "linked").symlink_to(tmp_path / "other")  # pointed elsewhere: noticed
    assert _realpath(tmp_path / "linked" / "c.yaml") == str(other)
