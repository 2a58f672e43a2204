"""The contracts module: run ids, tokens, the shared protocol file."""

import io
import json

import pytest

from ml_agent import contracts
from ml_agent.contracts import protocol


def test_run_ids_are_sortable_and_url_safe():
    first = contracts.new_run_id(now=1_800_000_000)
    later = contracts.new_run_id(now=1_800_000_060)
    assert contracts.RUN_ID_RE.match(first), first
    assert first < later
    assert first != contracts.new_run_id(now=1_800_000_000)


def test_tokens_are_random_and_hashed():
    token = contracts.mint_token()
    assert token.startswith(contracts.TOKEN_PREFIX)
    assert token != contracts.mint_token()
    assert contracts.hash_token(token) != token
    assert len(contracts.hash_token(token)) == 64


def test_emitter_numbers_events_and_decoder_reads_them_back():
    out = io.StringIO()
    emitter = protocol.Emitter(out)
    emitter.emit(protocol.READY, model="m")
    emitter.emit(protocol.ASSISTANT_TEXT, text="hi")
    events = [protocol.decode_event(line) for line in out.getvalue().splitlines()]
    assert [e["seq"] for e in events] == [1, 2]
    assert [e["type"] for e in events] == ["ready", "assistant_text"]
    assert list(protocol.dedupe(iter(events + events))) == events


@pytest.mark.parametrize(
    "line", ["", "nope", "[]", json.dumps({"type": "user"}), json.dumps({"type": "shell"})]
)
def test_bad_input_lines_are_protocol_errors(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_input(line)


def test_untrusted_output_lines_are_skipped():
    assert protocol.decode_event("plain log line") is None
    assert protocol.decode_event(json.dumps({"type": "result"})) is None  # no seq
    assert protocol.decode_event("[" * 100_000) is None
