"""Every modal error class becomes one message that says what to do (modal/exception.py)."""

from __future__ import annotations

import pytest
from modal import exception as mx

from ml_agent.backends.modal import ModalBackend
from ml_agent.backends.modal.errors import ADVICE, modal_errors
from ml_agent.errors import BackendError
from tests.modal.plans import config_plan


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


MODAL_ERRORS = sorted({c for c in _subclasses(mx.Error) if c.__module__ == "modal.exception"},
                      key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", MODAL_ERRORS, ids=lambda c: c.__name__)
def test_every_modal_error_class_has_its_own_advice(cls):
    args = ("im-1",) if cls is mx.ImageBuildError else ()
    with pytest.raises(BackendError) as caught, modal_errors("creating the sandbox"):
        raise cls("details from Modal", *args)
    message = str(caught.value)
    assert "while creating the sandbox" in message and "details from Modal" in message
    assert message != ADVICE["Error"].format(doing="creating the sandbox",
                                             exc="details from Modal")


def test_a_value_error_of_our_own_is_a_bug_not_a_user_error():
    with pytest.raises(ValueError, match="ours"), modal_errors("doing"):
        raise ValueError("ours")


def test_writing_to_an_ended_run_says_so(modal_with_secrets):
    # modal's stdin writer turns the server's refusal into a plain ValueError.
    backend = ModalBackend()
    run = backend.up(config_plan("a10.yaml"), task=None, detach=True)
    modal_with_secrets.sandboxes[run.sandbox_id].exit(0)
    with pytest.raises(BackendError, match=r"Modal refused the request while writing to run .*"
                       r"an ended sandbox takes no input"):
        backend.send(run.run_id, '{"type": "user", "text": "hi"}')


def test_a_second_live_sandbox_of_the_same_name_is_a_clear_error(modal_with_secrets):
    ModalBackend().up(config_plan("a10.yaml"), task=None, detach=True)
    with pytest.raises(BackendError, match="already exists on Modal, while creating the "
                       "sandbox .* launch again for a new run id"):
        ModalBackend().up(config_plan("a10.yaml"), task=None, detach=True)
