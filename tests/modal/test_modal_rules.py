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
