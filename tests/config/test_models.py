"""LaunchConfig: strict models, cross-field rules, and errors at the offending key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ml_agent.config.models import LaunchConfig

MINIMAL = """
app: demo
image:
  layers:
    - pip: [trackio==0.43.0]
volumes:
  data: {name: demo-data, mount: /data}
proxy:
  secret: anthropic-secret
"""


def _data(text: str) -> dict:
    return yaml.safe_load(textwrap.dedent(text))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def validate(text: str = MINIMAL, base_dir: Path | None = None, **sections) -> LaunchConfig:
    data = _merge(_data(text), sections)
    return LaunchConfig.model_validate(data, context={"base_dir": base_dir or Path.cwd()})


def errors(text: str = MINIMAL, base_dir: Path | None = None, **sections) -> dict:
    """{loc as 'a.b.0': message} of every error."""
    with pytest.raises(ValidationError) as info:
        validate(text, base_dir, **sections)
    return {
        ".".join(map(str, e["loc"])): e["msg"].removeprefix("Value error, ")
        for e in info.value.errors()
    }


def test_defaults():
    config = validate()
    assert config.backend == "modal"
    assert config.image.python == "3.11"
    assert config.sandbox.gpu is None
    assert config.sandbox.timeout == 3600
    assert config.sandbox.network.mode == "open"
    assert config.volumes["data"].create_if_missing is True
    assert config.volumes["data"].read_only is False
    assert config.agent.entrypoint == "/agent/agent.py"
    assert config.agent.permission_mode == "bypassPermissions"
    assert config.proxy.upstream == "https://api.anthropic.com"
    assert config.proxy.allowed_paths == [
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /v1/models",
    ]
    assert config.syncer.enabled is False
    assert config.syncer.private is True


def test_shorthands_are_parsed():
    config = validate(
        sandbox={"gpu": "h100:2", "timeout": "1h30m", "idle_timeout": "20m", "memory": "16GiB"}
    )
    assert str(config.sandbox.gpu) == "H100:2"
    assert config.sandbox.timeout == 5400
    assert config.sandbox.idle_timeout == 1200
    assert config.sandbox.memory == 16384


def test_unknown_keys_are_errors_at_their_place():
    errs = errors(gpus="A10", sandbox={"gpuu": "A10"})
    assert errs["gpus"].startswith("Extra inputs are not permitted")
    assert errs["sandbox.gpuu"].startswith("Extra inputs are not permitted")


def test_models_are_frozen():
    config = validate()
    with pytest.raises(ValidationError):
        config.app = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("layer", "loc", "message"),
    [
        ({"apt": ["git"], "pip": ["x"]}, "image.layers.0", "exactly one of apt, pip, env, run"),
        ({}, "image.layers.0", "exactly one of apt, pip, env, run, file, dir (got none)"),
        ({"aptt": ["git"]}, "image.layers.0", "unknown layer kind 'aptt'; did you mean 'apt'?"),
        ("apt git", "image.layers.0", "a layer is a mapping"),
        ({"apt": ["git curl"]}, "image.layers.0.apt", "one package per item (got 'git curl')"),
        ({"apt": []}, "image.layers.0.apt", "an empty apt layer does nothing"),
        ({"pip": ["--upgrade"]}, "image.layers.0.pip", "no pip options"),
        ({"env": {"A": 1}}, "image.layers.0.env.A", 'quote it: "1"'),
        ({"run": [""]}, "image.layers.0.run", "empty command"),
        ({"file": {"src": "x", "dest": "/x", "mode": 1}}, "image.layers.0.file.mode", "Extra"),
    ],
)
def test_layer_errors(layer, loc, message):
    errs = errors(image={"layers": [layer]})
    assert message in errs[loc], errs


def test_layer_src_is_resolved_against_the_config_folder(tmp_path):
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "agent.py").write_text("print()\n")
    layers = [
        {"file": {"src": "agent/agent.py", "dest": "/agent/agent.py"}},
        {"dir": {"src": "agent", "dest": "/app/agent"}},
    ]
    config = validate(base_dir=tmp_path, image={"layers": layers})
    file_layer, dir_layer = config.image.layers
    assert file_layer.file.src == str(tmp_path / "agent" / "agent.py")
    assert dir_layer.dir.src == str(tmp_path / "agent")


def test_layer_src_errors(tmp_path):
    (tmp_path / "f.py").write_text("")
    (tmp_path / "d").mkdir()
    layers = [
        {"file": {"src": "missing.py", "dest": "/m.py"}},
        {"file": {"src": "d", "dest": "/d"}},
        {"dir": {"src": "f.py", "dest": "/f"}},
        {"file": {"src": "f.py", "dest": "f.py"}},
    ]
    errs = errors(base_dir=tmp_path, image={"layers": layers})
    assert "no such file: 'missing.py'" in errs["image.layers.0.file.src"]
    assert "relative to the folder of the YAML file that sets it" in errs["image.layers.0.file.src"]
    assert "'d' is a folder; use a `dir:` layer" in errs["image.layers.1.file.src"]
    assert "'f.py' is a file; use a `file:` layer" in errs["image.layers.2.dir.src"]
    assert "did you mean '/f.py'?" in errs["image.layers.3.file.dest"]


def test_python_version_float_gets_quote_it():
    errs = errors(image={"python": 3.1})
    assert errs["image.python"] == 'YAML read 3.10 as the number 3.1; quote it: python: "3.10"'


def test_data_volume_is_required():
    text = MINIMAL.replace("data: {name: demo-data, mount: /data}", "x: {name: x, mount: /x}")
    errs = errors(text)
    assert "a volume with key 'data' is required" in errs["volumes"]


def test_data_volume_must_be_writable():
    errs = errors(volumes={"data": {"read_only": True}})
    assert "must be writable" in errs["volumes.data.read_only"]


def test_volume_collisions():
    errs = errors(
        volumes={
            "a": {"name": "demo-data", "mount": "/a"},  # same Modal volume as data
            "b": {"name": "b", "mount": "/data"},  # same path as data
        }
    )
    assert "already mounted as 'data'" in errs["volumes.a.name"]
    assert "already the mount of volume 'data'" in errs["volumes.b.mount"]


def test_nested_mounts_are_allowed():
    config = validate(volumes={"cache": {"name": "c", "mount": "/data/cache"}})
    assert config.volumes["cache"].mount == "/data/cache"


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("/root", "Modal cannot mount a volume at '/root'"),
        ("/tmp", "Modal cannot mount a volume at '/tmp'"),
        ("/", "cannot be '/'"),
        ("data", "did you mean '/data'?"),
    ],
)
def test_bad_mounts(mount, message):
    errs = errors(volumes={"data": {"mount": mount}})
    assert message in errs["volumes.data.mount"]


def test_volume_shadowing_a_layer(tmp_path):
    (tmp_path / "f.py").write_text("")
    layers = [
        {"file": {"src": "f.py", "dest": "/data/f.py"}},  # inside the data volume
        {"dir": {"src": ".", "dest": "/app"}},  # a volume inside it
        {"file": {"src": "f.py", "dest": "/ok/f.py"}},
    ]
    errs = errors(
        base_dir=tmp_path,
        image={"layers": layers},
        volumes={"cache": {"name": "cache", "mount": "/app/cache"}},
    )
    assert "overlaps volume 'data' mounted at '/data'" in errs["image.layers.0.file.dest"]
    assert "overlaps volume 'cache'" in errs["image.layers.1.dir.dest"]
    assert not any(loc.startswith("image.layers.2") for loc in errs)


@pytest.mark.parametrize(
    ("timeout", "ok"),
    [("10s", True), ("24h", True), (86400, True), ("9s", False), ("25h", False), (0, False)],
)
def test_timeout_bounds(timeout, ok):
    if ok:
        assert validate(sandbox={"timeout": timeout}).sandbox.timeout >= 10
    else:
        assert (
            "timeout must be between 10s and 24h"
            in errors(sandbox={"timeout": timeout})["sandbox.timeout"]
        )


def test_timeout_is_not_nullable():
    errs = errors(sandbox={"timeout": None})
    assert "duration" in errs["sandbox.timeout"]


def test_gpu_error_points_at_gpu():
    assert errors(sandbox={"gpu": "A11"})["sandbox.gpu"] == "unknown GPU 'A11'; did you mean 'A10'?"


def test_gpu_null_is_cpu():
    assert validate(sandbox={"gpu": None}).sandbox.gpu is None


@pytest.mark.parametrize(
    ("network", "mode", "domains"),
    [
        ("open", "open", []),
        ("blocked", "blocked", []),
        ({"allowlist": ["pypi.org", "*.hf.co"]}, "allowlist", ["pypi.org", "*.hf.co"]),
    ],
)
def test_network_forms(network, mode, domains):
    config = validate(sandbox={"network": network}, proxy={"enabled": mode != "blocked"})
    assert config.sandbox.network.mode == mode
    assert config.sandbox.network.allowlist == domains


@pytest.mark.parametrize(
    ("network", "loc", "message"),
    [
        ({"mode": "blocked", "allowlist": ["pypi.org"]}, "allowlist", "cannot have an allowlist"),
        ({"mode": "open", "allowlist": ["pypi.org"]}, "allowlist", "remove the allowlist"),
        ({"allowlist": []}, "allowlist", "an empty allowlist blocks everything"),
        ("blokced", "", "did you mean 'blocked'?"),
        ({"allowlist": ["https://pypi.org"]}, "allowlist.0", "did you mean 'pypi.org'?"),
    ],
)
def test_network_errors(network, loc, message):
    errs = errors(sandbox={"network": network})
    key = "sandbox.network" + (f".{loc}" if loc else "")
    assert message in errs[key], errs


def test_blocked_network_with_the_proxy_is_an_error_on_modal_only():
    errs = errors(sandbox={"network": "blocked"})
    assert "cuts the agent off from its proxy on Modal" in errs["sandbox.network"]
    # The local backend binds the proxy's Unix socket into the sandbox.
    assert validate(sandbox={"network": "blocked"}, backend="local").sandbox.network.mode == (
        "blocked"
    )


def test_config_env_cannot_set_launcher_keys():
    errs = errors(sandbox={"env": {"ANTHROPIC_API_KEY": "sk-x", "OK": "1"}})
    assert list(errs) == ["sandbox.env.ANTHROPIC_API_KEY"]
    assert "set by the launcher" in errs["sandbox.env.ANTHROPIC_API_KEY"]
    assert "sk-x" not in errs["sandbox.env.ANTHROPIC_API_KEY"]


def test_env_errors():
    errs = errors(sandbox={"env": {"bad-name": "x", "N": 3}})
    assert "did you mean 'BAD_NAME'?" in errs["sandbox.env.bad-name.[key]"]
    assert 'quote it: "3"' in errs["sandbox.env.N"]


def test_duplicate_secrets():
    errs = errors(sandbox={"secrets": ["a", "b", "a"]})
    assert "secret 'a' is listed twice" in errs["sandbox.secrets"]


def test_syncer_volume_must_exist():
    errs = errors(
        volumes={"trackio": {"name": "t", "mount": "/t"}},
        syncer={"volume": "trackoi", "namespace": "me", "secret": "hf"},
    )
    assert errs["syncer.volume"] == "unknown volume key 'trackoi'; did you mean 'trackio'?"


def test_syncer_needs_its_settings_when_enabled():
    errs = errors(syncer={"enabled": True})
    assert set(errs) == {"syncer.volume", "syncer.namespace", "syncer.secret"}
    assert validate(syncer={"enabled": False}).syncer.volume is None


def test_syncer_space_must_be_inside_namespace():
    errs = errors(
        syncer={"volume": "data", "namespace": "me", "secret": "hf", "space_id": "you/metrics"}
    )
    assert "outside namespace 'me'; write me/metrics" in errs["syncer.space_id"]


def test_syncer_interval():
    config = validate(
        syncer={"volume": "data", "namespace": "me", "secret": "hf", "interval": "1m"}
    )
    assert config.syncer.interval == 60
    assert (
        "interval must be between 5s"
        in errors(syncer={"enabled": False, "interval": 1})["syncer.interval"]
    )


@pytest.mark.parametrize(
    ("proxy", "loc", "message"),
    [
        ({"upstream": "https://gateway.example.com"}, "proxy.upstream", "needs upstream_secret"),
        ({"upstream": "http://gateway.example.com"}, "proxy.upstream", "must use https"),
        ({"upstream": "https://u:p@api.anthropic.com"}, "proxy.upstream", "credentials"),
        ({"upstream": "ftp://x"}, "proxy.upstream", "https URL"),
        ({"allowed_paths": ["/v1/messages"]}, "proxy.allowed_paths", "'METHOD /path'"),
        ({"budget_usd": 0}, "proxy.budget_usd", "greater than 0"),
        ({"secret": None}, "proxy.secret", "the modal backend needs proxy.secret"),
    ],
)
def test_proxy_errors(proxy, loc, message):
    errs = errors(proxy=proxy)
    assert message in errs[loc], errs


def test_proxy_to_another_host_uses_its_own_secret():
    config = validate(
        proxy={"upstream": "https://gateway.example.com/", "upstream_secret": "gateway-key"}
    )
    assert config.proxy.upstream == "https://gateway.example.com"
    assert config.proxy.upstream_secret == "gateway-key"


def test_local_backend_needs_no_proxy_secret_and_may_use_loopback():
    config = validate(
        backend="local",
        proxy={"secret": None, "upstream": "http://127.0.0.1:8080", "upstream_secret": "k"},
    )
    assert config.backend == "local"


def test_agent_settings():
    config = validate(agent={"allowed_tools": ["Bash", "Read"], "permission_mode": "plan"})
    assert config.agent.allowed_tools == ["Bash", "Read"]
    errs = errors(agent={"permission_mode": "yolo", "max_turns": 0, "allowed_tools": ["a,b"]})
    assert "bypassPermissions" in errs["agent.permission_mode"]
    assert "agent.max_turns" in errs
    assert "one tool name per item" in errs["agent.allowed_tools"]


def test_every_problem_of_a_section_at_once():
    errs = errors(sandbox={"gpu": "A11", "timeout": "2d", "workdir": "app", "cpu": 0})
    assert {"sandbox.gpu", "sandbox.timeout", "sandbox.workdir", "sandbox.cpu"} <= set(errs)
