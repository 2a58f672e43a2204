"""Modal's own rules, checked offline before anything is deployed: names, tags, resources.

Each rule is the one the installed modal client (or the server, as the fake plays it)
applies; the source is named beside each test.
"""

from __future__ import annotations

import pytest
from modal._utils.name_utils import is_valid_object_name

from ml_agent.backends.modal import ModalBackend, stores
from ml_agent.config.types import APP_NAME_MAX
from ml_agent.errors import ConfigError
from tests.modal.plans import config_plan


# -- names and tags (modal/_utils/name_utils.py is_valid_object_name, check_tag_dict) -------
def test_every_name_derived_from_the_longest_app_name_is_a_modal_name():
    app = "a" * APP_NAME_MAX
    plan = config_plan("a10.yaml", f"app={app}")
    derived = [stores.tokens_dict_name(app), stores.usage_dict_name(app),
               stores.state_dict_name(app), stores.sync_dict_name(app)]
    assert all(is_valid_object_name(name) for name in derived)
    assert max(len(name) for name in derived) == 64
    assert plan.app == app


def test_an_app_name_whose_stores_would_not_fit_is_refused_up_front():
    app = "a" * (APP_NAME_MAX + 1)
    with pytest.raises(ConfigError, match=rf"app names are at most {APP_NAME_MAX} characters "
                       rf"\(got {APP_NAME_MAX + 1}\).*'{app}-tokens'"):
        config_plan("a10.yaml", f"app={app}")


def test_up_passes_modal_name_and_tag_rules_on_the_fake(modal_with_secrets):
    # The fake refuses a Dict name over 64 characters and a tag over 63, like Modal.
    plan = config_plan("a10.yaml", f"app={'a' * APP_NAME_MAX}", "syncer.enabled=true")
    plan = plan.model_copy(update={"config_name": "my config (v2) " + "x" * 80})
    run = ModalBackend().up(plan, task=None, detach=True)
    (create,) = modal_with_secrets.requests("SandboxCreate")
    tags = {t.tag_name: t.tag_value for t in create.tags}
    assert tags["ml-agent-config-hash"] == plan.config_hash[:32]
    assert tags["ml-agent-config"] == ("my-config--v2--" + "x" * 80)[:63]
    assert run.config_hash == plan.config_hash  # the registry keeps all of it
    assert f"{plan.app}-tokens" in modal_with_secrets.servicer.dicts


# -- resources (modal/_resources.py convert_fn_config_to_resources_config;
#    modal/sandbox/_common.py scheduler_placement and cloud_provider_str) ------------------
def _sandbox(*overrides: str):
    return config_plan("base.yaml", *overrides).sandbox


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("sandbox.memory=0", "memory must be at least 1 MiB"),
        ("sandbox.memory=-5", "memory must be at least 1 MiB"),
        ("sandbox.memory=0GiB", "memory must be more than 0"),
        ("sandbox.memory=[16GiB,8GiB]", r"memory limit \(8192 MiB\) is below the request"),
        ("sandbox.cpu=0", "cpu must be at least 0.001 cores"),
        ("sandbox.cpu=[4,1]", r"cpu limit \(1\) is below the request \(4\)"),
        ("sandbox.cpu=[1,2,3]", r"one value or \[request, limit\]"),
        ("sandbox.cloud=azure", "'aws', 'gcp', 'oci' or 'auto'"),
        ("sandbox.region=[]", "a region name or a list"),
    ],
)
def test_resources_modal_would_refuse_are_refused_offline(setting, message):
    with pytest.raises(ConfigError, match=message):
        _sandbox(setting)


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("2", "512"), ("0.5", "16GiB"), ("[1,4]", "[8GiB,16GiB]"), ("[1,1]", "[1024,1024]")],
)
def test_every_accepted_reservation_passes_modals_own_conversion(cpu, memory):
    from modal._resources import convert_fn_config_to_resources_config

    sandbox = _sandbox(f"sandbox.cpu={cpu}", f"sandbox.memory={memory}")
    resources = convert_fn_config_to_resources_config(
        cpu=sandbox.cpu, memory=sandbox.memory_mib, gpu=None
    )
    assert resources.milli_cpu > 0 and resources.memory_mb > 0


def test_request_limit_pairs_region_and_cloud_reach_sandbox_create(modal_with_secrets):
    plan = config_plan("a10.yaml", "sandbox.cpu=[1,4]", "sandbox.memory=[8GiB,16GiB]",
                       "sandbox.region=[us-east,us-west]", "sandbox.cloud=oci")
    ModalBackend().up(plan, task=None, detach=True)
    (create,) = modal_with_secrets.requests("SandboxCreate")
    res = create.definition.resources
    assert (res.milli_cpu, res.milli_cpu_max) == (1000, 4000)
    assert (res.memory_mb, res.memory_mb_max) == (8192, 16384)
    assert list(create.definition.scheduler_placement.regions) == ["us-east", "us-west"]
    assert create.definition.cloud_provider_str == "oci"


# -- Python and the image builder (modal/_image.py SUPPORTED_PYTHON_SERIES,
#    _validate_python_version, _get_image_builder_version) -------------------------------
def test_the_python_table_is_modals():
    from modal._image import LATEST_IMAGE_BUILDER_VERSION, SUPPORTED_PYTHON_SERIES

    from ml_agent.config.types import DEFAULT_IMAGE_BUILDER, IMAGE_BUILDER_PYTHON

    assert {
        builder: tuple(v for v in series if not v.endswith("t"))
        for builder, series in SUPPORTED_PYTHON_SERIES.items()
    } == IMAGE_BUILDER_PYTHON
    assert DEFAULT_IMAGE_BUILDER == LATEST_IMAGE_BUILDER_VERSION


@pytest.mark.parametrize(
    ("python", "builder", "message"),
    [
        ("3.10", None, r"image builder version 2026.10 does not build Python 3.10 \(it builds "
         r"3.11, 3.12, 3.13, 3.14, 3.15\): .* image.builder: \"2025.06\", which builds it"),
        ("3.15", "2024.10", r"version 2024.10 does not build Python 3.15 .* \"2026.10\""),
    ],
)
def test_a_python_the_image_builder_does_not_build_is_refused(python, builder, message):
    sets = [f'image.python="{python}"', *([f'image.builder="{builder}"'] if builder else [])]
    with pytest.raises(ConfigError, match=message):
        config_plan("a10.yaml", *sets)


def test_the_local_backend_ignores_the_image_builder():
    assert config_plan("a10.yaml", 'image.python="3.10"', "backend=local").image.python == "3.10"


@pytest.mark.parametrize(("python", "builder"), [("3.15", "2026.10"), ("3.10", "2025.06")])
def test_images_build_with_the_configs_builder_on_the_fake(modal_with_secrets, python, builder):
    # The fake's workspace is on the newest builder (which refuses 3.10, in the client).
    plan = config_plan("a10.yaml", f'image.python="{python}"', f'image.builder="{builder}"')
    ModalBackend().up(plan, task=None, detach=True)
    builds = modal_with_secrets.requests("ImageGetOrCreate")
    assert {r.builder_version for r in builds} == {builder}
    assert any(f"python:{python}" in " ".join(r.image.dockerfile_commands) for r in builds)


# -- shorthand with non-ASCII digits ('²'.isdigit() is True, int('²') raises) ---------------
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("sandbox.gpu=H100:²", r"GPU count must be a whole number \(got '²'\)"),
        ("sandbox.gpu=H100:٢", r"GPU count must be a whole number \(got '٢'\)"),
        ("sandbox.timeout=²", "not a duration: '²'"),
        ("sandbox.timeout=²h", "not a duration: '²h'"),
        ("sandbox.memory=²GiB", "not a memory size: '²GiB'"),
    ],
)
def test_non_ascii_digits_are_a_clear_error_not_an_int_error(setting, message):
    with pytest.raises(ConfigError, match=message) as caught:
        _sandbox(setting)
    assert "invalid literal" not in str(caught.value)
