"""The builder turns a Plan into real modal objects (offline) and Sandbox.create arguments."""

from __future__ import annotations

import modal
import pytest
from modal._utils.async_utils import synchronizer

from ml_agent.backends.modal import builder
from ml_agent.contracts import protocol
from ml_agent.errors import BackendError
from tests.modal.plans import a10_plan


def _impl(obj):
    return synchronizer._translate_in(obj)


@pytest.fixture
def plan(tmp_path):
    return a10_plan(tmp_path)


def test_layers_become_image_calls_in_order(plan):
    steps = builder.image_steps(plan.image)
    assert [s.method for s in steps] == [
        "apt_install", "uv_pip_install", "env", "add_local_file", "add_local_dir"
    ]
    assert steps[0].args == ("git", "curl")
    assert steps[1].args == ("claude-agent-sdk", "trackio")
    assert steps[2].args == ({"PYTHONUNBUFFERED": "1"},)
    assert steps[3].args[1] == "/agent/agent.py" and steps[3].kwargs == {"copy": False}
    assert steps[1].label == "layer 2 (pip: claude-agent-sdk, trackio)"


def test_chain_is_real_images_with_mounted_local_files(plan):
    chain = builder.build_image(plan.image)
    assert [label.split(" (")[0] for label, _ in chain] == [
        "base", "layer 1", "layer 2", "layer 3", "layer 4", "layer 5"
    ]
    assert all(isinstance(image, modal.Image) for _, image in chain)
    final = _impl(chain[-1][1])
    assert final._rep == "Image(local files)"  # copy=False: mounted at start, not built
    _, dir_mount = final._deps()
    assert str(dir_mount._entries[0].remote_path) == "/app/.claude"
    file_layer = _impl(chain[-2][1])
    _, file_mount = file_layer._deps()
    assert [str(e.remote_path) for e in file_mount._entries] == ["/agent/agent.py"]


def test_copy_layers_are_built_into_the_image(tmp_path):
    plan = a10_plan(tmp_path)
    layers = [layer.model_dump(by_alias=True) for layer in plan.image.layers]
    layers[3]["copy"] = True
    layers.append({"kind": "run", "commands": ["python /agent/agent.py --check"]})
    plan = a10_plan(tmp_path, image__layers=layers)
    chain = builder.build_image(plan.image)
    assert _impl(chain[4][1])._rep != "Image(local files)"  # a COPY layer
    assert _impl(chain[-1][1])._rep != "Image(local files)"


def test_volumes_by_mount_path_with_options(tmp_path):
    plan = a10_plan(tmp_path)
    vols = [v.model_dump() for v in plan.volumes]
    vols[1]["read_only"] = True
    plan = a10_plan(tmp_path, volumes=vols)
    _, kwargs = builder.sandbox_create_args(
        plan, app=modal.App("ml-agent"), image=modal.Image.debian_slim(), env={}
    )
    mounted = kwargs["volumes"]
    assert list(mounted) == ["/data", "/root/.cache/huggingface/trackio"]
    assert _impl(mounted["/data"])._mount_options is None
    assert _impl(mounted["/root/.cache/huggingface/trackio"])._mount_options.read_only is True


def test_sandbox_arguments(plan):
    app = modal.App("ml-agent")
    image = builder.build_image(plan.image)[-1][1]
    env = {"ANTHROPIC_BASE_URL": "https://proxy.modal.run", "ANTHROPIC_API_KEY": "mla-run-x"}
    args, kwargs = builder.sandbox_create_args(
        plan, app=app, image=image, env=env, task="train a model"
    )
    assert args == ("python", "/agent/agent.py", protocol.ONE_SHOT_FLAG)
    assert kwargs["gpu"] == "A10"
    assert kwargs["timeout"] == 3600
    assert kwargs["idle_timeout"] == 1200
    assert kwargs["workdir"] == "/app"
    assert kwargs["env"] == env
    assert set(kwargs["volumes"]) == {"/data", "/root/.cache/huggingface/trackio"}
    assert kwargs["tags"] == {
        "ml-agent-run": "20261126-0315-a1b2c3",
        "ml-agent-config": "a10",
        "ml-agent-config-hash": plan.config_hash,
    }
    assert kwargs["name"] == "run-20261126-0315-a1b2c3"
    assert "block_network" not in kwargs and "cpu" not in kwargs and "memory" not in kwargs
    assert builder.agent_command(plan, None) == ("python", "/agent/agent.py")


def test_resources_and_secrets(tmp_path):
    plan = a10_plan(
        tmp_path, sandbox__cpu=4.0, sandbox__memory_mib=16384, sandbox__gpu=None,
        sandbox__secrets=["github-secret"],
    )
    _, kwargs = builder.sandbox_create_args(
        plan, app=modal.App("a"), image=modal.Image.debian_slim(), env={}
    )
    assert (kwargs["cpu"], kwargs["memory"], kwargs["gpu"]) == (4.0, 16384, None)
    assert [_impl(s)._rep for s in kwargs["secrets"]] == [
        "modal.Secret.from_name('github-secret')"
    ]


def test_network_allowlist_admits_the_proxy(tmp_path):
    plan = a10_plan(
        tmp_path, sandbox__network={"mode": "allowlist", "domains": ["huggingface.co"]}
    )
    assert builder.network_kwargs(plan, "https://me--ml-agent-proxy.modal.run") == {
        "outbound_domain_allowlist": ["huggingface.co", "me--ml-agent-proxy.modal.run"]
    }


def test_blocked_network_without_proxy(tmp_path):
    plan = a10_plan(tmp_path, sandbox__network={"mode": "blocked", "domains": []})
    with pytest.raises(BackendError, match="must reach its proxy"):
        builder.network_kwargs(plan, "https://p.modal.run")
    proxy = dict(plan.proxy.model_dump(), enabled=False)
    plan = a10_plan(tmp_path, sandbox__network={"mode": "blocked", "domains": []}, proxy=proxy)
    assert builder.network_kwargs(plan, None) == {"block_network": True}


def test_image_requests_carry_the_dockerfile_commands(fake_modal, plan):
    app = modal.App.lookup("builder-test", create_if_missing=True)
    chain = builder.build_image(plan.image)
    chain[-1][1].build(app)
    commands = [list(r.image.dockerfile_commands) for r in fake_modal.requests("ImageGetOrCreate")]
    assert len(commands) == 4  # base + apt + pip + env; file/dir layers are mounts, not builds
    assert commands[0][0] == "FROM python:3.11-slim-trixie"
    assert commands[1] == ["FROM base", "RUN apt-get update", "RUN apt-get install -y git curl"]
    assert commands[2][0] == "FROM base"
    assert commands[2][-1].endswith("pip install --python $(command -v python) --compile-bytecode "
                                    "claude-agent-sdk trackio")
    assert commands[3] == ["FROM base", "ENV PYTHONUNBUFFERED=1"]
    files = [f for r in fake_modal.requests("MountGetOrCreate") for f in r.files]
    assert {f.filename for f in files} >= {"/agent/agent.py", "/app/.claude/CLAUDE.md"}


def test_plan_prints_the_sandbox_create_call_that_up_makes(modal_with_secrets):
    import ast

    from ml_agent.backends.modal import ModalBackend
    from ml_agent.cli.plan import modal_calls
    from tests.modal.plans import config_plan

    plan = config_plan("a10.yaml", "sandbox.network.allowlist=[pypi.org]",
                       "sandbox.cpu=[1,2]", "sandbox.region=us-east")
    ModalBackend().up(plan, task=None, detach=True)
    (create,) = modal_with_secrets.requests("SandboxCreate")
    printed = modal_calls(plan)[-1]
    call = ast.parse(printed.replace("{...}", "{}").replace("<proxy host>", "proxy")).body[0]
    kwargs = {k.arg: k.value for k in call.value.keywords}
    assert ast.literal_eval(kwargs["tags"]) == {t.tag_name: t.tag_value for t in create.tags}
    assert ast.literal_eval(kwargs["name"]) == create.definition.name
    assert ast.literal_eval(kwargs["timeout"]) == create.definition.timeout_secs
    assert [ast.literal_eval(a) for a in call.value.args] == list(
        create.definition.entrypoint_args)
    assert ast.literal_eval(kwargs["cpu"]) == (1.0, 2.0)
    assert "pypi.org" in ast.literal_eval(kwargs["outbound_domain_allowlist"])
