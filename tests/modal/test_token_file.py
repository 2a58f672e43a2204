"""The run token this machine keeps for a Modal run (to redact it from output): 0600, atomic."""

from __future__ import annotations

import stat

from ml_agent.backends.modal import ModalBackend
from ml_agent.contracts import ml_agent_home
from tests.modal.plans import config_plan

RUN_ID = "20261126-0315-a1b2c3"


def test_the_run_token_replaces_what_was_at_its_path(modal_with_secrets, tmp_path):
    tokens = ml_agent_home() / "modal" / "tokens"
    tokens.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not a token\n")
    elsewhere.chmod(0o644)
    (tokens / RUN_ID).symlink_to(elsewhere)  # a link (or a readable file) left at the path

    backend = ModalBackend()
    backend.up(config_plan("a10.yaml", run_id=RUN_ID), task=None, detach=True)

    path = tokens / RUN_ID
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "not a token\n"  # nothing written through the link
    assert backend.token(RUN_ID) == path.read_text() and len(path.read_text()) > 20
