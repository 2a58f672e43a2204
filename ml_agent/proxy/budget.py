"""Run budgets: a request's worst plausible cost is reserved before it is sent.

Metering alone (add the cost once an answer ends) lets concurrent requests overspend
without bound: thirty $1 requests started together on a $1 budget all see $0 spent. So,
before a Messages request is forwarded, `estimate()` prices it from its body:

    reservation = input price x ceil(body bytes / 4)  +  output price x RESERVE_SHARE x max_tokens

at the request's model price (pricing.price_for: an unknown model is priced at the most
expensive of its family). `Ledger.admit` forwards it only if

    recorded cost + unrecorded cost + reservations in flight + this reservation <= budget

and the reservation is released when the request is settled (its metered cost recorded).
What can still be spent beyond the budget (the README's statement) is, over the requests in
flight at the same time, the sum of (real cost - reservation): at most the
(1 - RESERVE_SHARE) x max_tokens they did not reserve, plus input beyond the bytes/4
estimate (cache writes price input at 1.25x or 2x). Because every admitted reservation fits
in what is left, the unreserved output is at most (1 - s)/s x the budget left at the time:
with s = 1/2, a run spends at most twice its budget plus the input under-estimate, and a
run whose requests never overlap (the Claude CLI's main loop) at most one request's
unreserved half of max_tokens over it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from ml_agent.proxy.pricing import Price, price_for

RESERVE_SHARE = 0.5
BYTES_PER_INPUT_TOKEN = 4
#: max_tokens assumed when the body does not say (the API requires it; the largest output
#: of the models priced).
DEFAULT_MAX_TOKENS = 128_000


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a request is reserved at, and why (the refusal message says it)."""

    usd: float
    model: str
    input_tokens: int
    max_tokens: int
    stream: bool = False

    def input_usd(self) -> float:
        return self.input_tokens * price_for(self.model).input / 1_000_000


def estimate(body: bytes, share: float = RESERVE_SHARE) -> Estimate:
    """The reservation for a Messages request body (parsed; see module docstring).

    A body that is not a JSON object is reserved at the default max_tokens of the most
    expensive model: the upstream refuses it for free, or it is not what it seems.
    """
    model, max_tokens, stream = "", DEFAULT_MAX_TOKENS, False
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        if body.count(b'"max_tokens"') > 1 or body.count(b'"model"') > 1:
            # Duplicate keys: JSON parsers differ on which one wins, so take the costliest.
            data = _costliest_pairs(body) or data
        if isinstance(data.get("model"), str):
            model = data["model"]
        value = data.get("max_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            max_tokens = value
        stream = data.get("stream") is True
    price = price_for(model)
    input_tokens = math.ceil(len(body) / BYTES_PER_INPUT_TOKEN)
    if price.long and price.long_prompt_above and input_tokens > price.long_prompt_above:
        price = price.long
    output_tokens = math.ceil(share * max_tokens)
    usd = (input_tokens * price.input + output_tokens * price.output) / 1_000_000
    return Estimate(usd, model, input_tokens, max_tokens, stream)


def _costliest_pairs(body: bytes) -> dict[str, Any] | None:
    top: dict[str, Any] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key == "max_tokens" and isinstance(obj.get(key), int) and isinstance(value, int):
                value = max(obj[key], value)
            elif key == "model" and isinstance(obj.get(key), str) and isinstance(value, str):
                value = max(obj[key], value, key=lambda m: _rank(price_for(m)))
            obj[key] = value
        top.clear()
        top.update(obj)  # the last object built is the outermost
        return obj

    try:
        json.loads(body, object_pairs_hook=pairs)
    except ValueError:
        return None
    return top


def _rank(price: Price) -> tuple[float, float]:
    return (price.output, price.input)


class Ledger:
    """Per run: reservations in flight and usage not recorded yet (in this process).

    The proxy runs on one event loop (and on Modal as one container), so checking and
    reserving with no await between them is atomic.
    """

    def __init__(self) -> None:
        self._reserved: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self.unrecorded: dict[str, dict[str, float]] = {}

    def reserved(self, run_id: str) -> float:
        return self._reserved.get(run_id, 0.0)

    def in_flight(self, run_id: str) -> int:
        return self._in_flight.get(run_id, 0)

    def unrecorded_usd(self, run_id: str) -> float:
        return float(self.unrecorded.get(run_id, {}).get("cost_usd", 0.0))

    def reserve(self, run_id: str, usd: float) -> None:
        self._reserved[run_id] = self._reserved.get(run_id, 0.0) + usd
        self._in_flight[run_id] = self._in_flight.get(run_id, 0) + 1

    def release(self, run_id: str, usd: float) -> None:
        left = self._in_flight.get(run_id, 0) - 1
        if left <= 0:  # no float residue once nothing is in flight
            self._reserved.pop(run_id, None)
            self._in_flight.pop(run_id, None)
        else:
            self._reserved[run_id] = max(self._reserved.get(run_id, 0.0) - usd, 0.0)
            self._in_flight[run_id] = left

    def keep_unrecorded(self, run_id: str, usage: dict[str, float]) -> None:
        pending = self.unrecorded.setdefault(run_id, {})
        for key, value in usage.items():
            pending[key] = pending.get(key, 0) + value

    def forget_unrecorded(self, run_id: str, recorded: dict[str, float]) -> None:
        """`recorded` (a copy of what was pending) is in the store now; usage kept since
        stays pending."""
        pending = self.unrecorded.get(run_id)
        if pending is None:
            return
        left = {k: v - recorded.get(k, 0) for k, v in pending.items()}
        if all(abs(v) < 1e-9 for v in left.values()):
            del self.unrecorded[run_id]
        else:
            self.unrecorded[run_id] = left
