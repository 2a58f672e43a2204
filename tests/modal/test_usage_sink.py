"""The `<app>-usage` modal.Dict sink under concurrency, on the fake control plane."""

from __future__ import annotations

import threading

from ml_agent.backends.modal.stores import ModalUsageSink


def _in_threads(*calls) -> None:
    threads = [threading.Thread(target=fn, args=args) for fn, *args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_concurrent_adds_to_one_run_lose_nothing(fake_modal):
    fake_modal.latency = 0.02  # every read-modify-write spans other threads' calls
    sink = ModalUsageSink.for_app("ml-agent")
    usage = {"requests": 1, "input_tokens": 10, "cost_usd": 0.5}
    _in_threads(*[(sink.add, "r1", usage) for _ in range(16)])
    assert ModalUsageSink.for_app("ml-agent").get("r1") == {
        "requests": 16, "input_tokens": 160, "cost_usd": 8.0}


def test_adds_to_different_runs_do_not_wait_for_each_other(fake_modal):
    # The proxy records every run's usage through one sink: a lock for all runs made each
    # record wait for every other run's two round trips (half the throughput at 100 agents).
    fake_modal.latency = 0.3
    sink = ModalUsageSink.for_app("ml-agent")
    sink.get("warm")  # resolve the Dict once
    del fake_modal.servicer.calls[:]
    _in_threads((sink.add, "r1", {"requests": 1}), (sink.add, "r2", {"requests": 1}))
    names = [name for name, _ in fake_modal.servicer.calls
             if name in ("DictGet", "DictUpdate")]
    # Both runs read before either writes (one lock for all: get, update, get, update).
    assert names == ["DictGet", "DictGet", "DictUpdate", "DictUpdate"], names
    assert sink.get("r1") == {"requests": 1} and sink.get("r2") == {"requests": 1}
