"""Config value types parse their own shorthand and explain what is wrong with a bad value."""

from __future__ import annotations

import pytest

from ml_agent.config import types
from ml_agent.config.types import GpuSpec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A10", "A10"),
        ("a10", "A10"),
        ("A10G", "A10"),
        ("a10g:4", "A10:4"),
        ("h100", "H100"),
        ("H100:8", "H100:8"),
        ("h100!", "H100!"),
        ("b200+:2", "B200+:2"),
        ("a100-80gb", "A100-80GB"),
        ("rtx-pro-6000", "RTX-PRO-6000"),
        ("L40S:1", "L40S"),
        (" T4 ", "T4"),
    ],
)
def test_gpu_shorthand(text, expected):
    spec = GpuSpec.parse(text)
    assert str(spec) == expected
    assert GpuSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("A11", "unknown GPU 'A11'; did you mean 'A10'?"),
        ("H1OO", "unknown GPU 'H1OO'; did you mean"),
        ("TPU", "unknown GPU 'TPU'; choose one of T4, L4, A10"),
        ("A10:5", "A10 allows 1 to 4 GPUs per sandbox (got 5)"),
        ("H100:9", "H100 allows 1 to 8 GPUs per sandbox (got 9)"),
        ("H100:0", "allows 1 to 8"),
        ("H100:two", "GPU count must be a whole number (got 'two')"),
        ("H100:", "GPU count must be a whole number"),
        (4, "gpu must be a string like 'A10'"),
        (True, "got a boolean"),
    ],
)
def test_gpu_errors(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GpuSpec.parse(value)


def test_every_gpu_type_has_a_price():
    from ml_agent.plan import GPU_USD_PER_HOUR

    assert set(GPU_USD_PER_HOUR) == set(types.GPU_TYPES)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2h0m5s", 7205),
        ("1H", 3600),
        ("600", 600),
        (600, 600),
        (60.0, 60),
    ],
)
def test_durations(value, seconds):
    assert types.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "1d", "h", "5 minutes", "1.5h", "-1h", "m30", [1], None])
def test_bad_durations(value):
    with pytest.raises(ValueError, match="duration"):
        types.parse_duration(value)


def test_durations_format_back():
    for seconds in (1, 59, 60, 90, 3600, 5400, 86400, 3661):
        assert types.parse_duration(types.format_duration(seconds)) == seconds
    assert types.format_duration(5400) == "1h30m"


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        ("16GiB", 16384),
        ("16gib", 16384),
        ("512MiB", 512),
        ("512Mi", 512),
        ("1TiB", 1024 * 1024),
        ("16GB", 15259),  # decimal gigabytes, rounded up to whole MiB
        ("1.5GiB", 1536),
        ("1000KiB", 1),  # rounded up
        (4096, 4096),
        ("4096", 4096),
    ],
)
def test_memory(value, mib):
    assert types.parse_memory(value) == mib


@pytest.mark.parametrize("value", ["", "lots", "16 PB", "GiB", "-1GiB", True, 1.5])
def test_bad_memory(value):
    with pytest.raises(ValueError, match="memory"):
        types.parse_memory(value)


@pytest.mark.parametrize("path", ["/data", "/root/.cache/huggingface/trackio", "/tmp/x", "/a.b"])
def test_mount_paths(path):
    assert types.parse_mount_path(path) == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data", "must be an absolute path (got 'data'); did you mean '/data'?"),
        ("./data/", "must be an absolute path (got './data/'); did you mean '/data'?"),
        ("/data/", "must be a canonical path (got '/data/'); did you mean '/data'?"),
        ("/data/../x", "did you mean '/x'?"),
        ("//data", "did you mean '/data'?"),
        ("/", "cannot be '/'"),
        ("/root", "Modal cannot mount a volume at '/root'"),
        ("/tmp", "Modal cannot mount a volume at '/tmp'"),
        (3, "must be a string"),
    ],
)
def test_bad_mount_paths(path, message):
    with pytest.raises(ValueError) as info:
        types.parse_mount_path(path)
    assert message in str(info.value)


def test_abs_paths_allow_root_and_tmp_inside():
    assert types.parse_abs_path("/root") == "/root"
    assert types.parse_abs_path("/tmp") == "/tmp"


@pytest.mark.parametrize("name", ["HF_HOME", "_X", "a1"])
def test_env_names(name):
    assert types.parse_env_name(name) == name


@pytest.mark.parametrize(
    ("name", "hint"), [("bad-name", "'BAD_NAME'"), ("1X", "'_1X'"), ("A B", "'A_B'")]
)
def test_bad_env_names(name, hint):
    with pytest.raises(ValueError, match=f"did you mean {hint}"):
        types.parse_env_name(name)


@pytest.mark.parametrize(("value", "shown"), [(1, '"1"'), (True, '"true"'), (0.5, '"0.5"')])
def test_env_values_are_strings(value, shown):
    with pytest.raises(ValueError, match=f"quote it: {shown}"):
        types.parse_env_value(value)


@pytest.mark.parametrize("name", ["sandbox-data", "a.b_c-1", "x" * 63])
def test_modal_names(name):
    assert types.parse_modal_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "cannot be empty"),
        ("x" * 65, "at most 64 characters"),  # modal: is_valid_object_name, len <= 64
        ("my volume", "did you mean 'my-volume'?"),
        ("a/b", "did you mean 'a-b'?"),
        ("ap-" + "a" * 22, "looks like a Modal App ID"),
    ],
)
def test_bad_modal_names(name, message):
    with pytest.raises(ValueError, match=message):
        types.parse_modal_name(name)


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_python_versions(version):
    assert types.parse_python_version(version) == version


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3.1, 'YAML read 3.10 as the number 3.1; quote it: python: "3.10"'),
        (3.11, 'YAML read 3.11 as a number; quote it: python: "3.11"'),
        (3, 'python must be a string like "3.11"'),
        ("2.7", "Modal images do not offer Python '2.7'"),
        ("3.9", "choose one of 3.10, 3.11"),
    ],
)
def test_bad_python_versions(value, message):
    with pytest.raises(ValueError) as info:
        types.parse_python_version(value)
    assert message in str(info.value)


def test_python_versions_are_modals():
    """Every version we accept is one Modal's image builders support."""
    from modal._image import SUPPORTED_PYTHON_SERIES

    offered = {v for series in SUPPORTED_PYTHON_SERIES.values() for v in series}
    assert set(types.PYTHON_VERSIONS) <= offered


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://pypi.org/simple", "a domain, not a URL"),
        ("pypi", "not a domain name"),
        ("-x.org", "not a domain name"),
    ],
)
def test_bad_domains(value, message):
    with pytest.raises(ValueError, match=message):
        types.parse_domain(value)


def test_domains():
    assert types.parse_domain("PyPI.org") == "pypi.org"
    assert types.parse_domain("*.hf.co") == "*.hf.co"
