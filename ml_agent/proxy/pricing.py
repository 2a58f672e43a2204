"""What a request cost in USD: a dated price table per model (USD per million tokens).

Source: the model catalog baked into Claude Code 2.1.327 (the CLI bundled with
claude-agent-sdk 0.2.184), which matches Anthropic's public price list of that date
(https://docs.claude.com/en/docs/about-claude/pricing). Also priced from that page: long
context (a request whose input, cache reads and writes included, exceeds 200k tokens is
billed whole at the long rates: Sonnet 4 / 4.5 / 4.6 $6 in, $22.50 out), cache writes by
TTL (5 minutes 1.25x input, 1 hour 2x) and server tools (web search $10 per 1,000
searches, `usage.server_tool_use.web_search_requests`; web fetch costs only its tokens).
Update `PRICES_AS_OF` with the table. A model the table does not know is priced at the most
expensive model of its family (or of all, when the family is unknown too): the budget
errs on the side of stopping early, never of overspending.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

PRICES_AS_OF = "2026-11-26"


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_prompt_above: int | None = None  # prompt tokens above which `long` applies
    long: Price | None = None


def _tier(i: float, o: float, cache_read: float | None = None) -> Price:
    return Price(i, o, i * 1.25, i * 2, i / 10 if cache_read is None else cache_read)


#: USD per server-tool call, by its `usage.server_tool_use` key.
SERVER_TOOL_USD = {"web_search_requests": 10 / 1000}
#: Prompt tokens above which the long-context prices apply (Anthropic's 1M-context models).
LONG_CONTEXT = 200_000

TIERS = {
    "haiku_3": _tier(0.25, 1.25),
    "haiku_35": _tier(0.8, 4),
    "haiku_45": _tier(1, 5),
    "haiku_55": dataclasses.replace(
        _tier(0.1, 0.5), long_prompt_above=100_000, long=_tier(0.5, 2.5)
    ),
    "tier_2_10": _tier(2, 10, 0.2),
    "tier_2_10_cache_read_0_10": _tier(2, 10, 0.1),
    "tier_3_15": _tier(3, 15),
    "tier_3_15_long": dataclasses.replace(
        _tier(3, 15), long_prompt_above=LONG_CONTEXT, long=_tier(6, 22.5)
    ),
    "tier_4_20_cache_read_0_20": _tier(4, 20, 0.2),
    "tier_5_25": _tier(5, 25),
    "tier_8_40_cache_read_0_20": _tier(8, 40, 0.2),
    "tier_10_50": _tier(10, 50),
    "tier_10_50_cache_read_0_25": _tier(10, 50, 0.25),
    "tier_15_75": _tier(15, 75),
}

#: model id (without date suffix) -> tier
MODELS = {
    "claude-3-haiku": "haiku_3",
    "claude-3-5-haiku": "haiku_35",
    "claude-haiku-4-5": "haiku_45",
    "claude-haiku-5-5": "haiku_55",
    "claude-3-5-sonnet": "tier_3_15",
    "claude-3-7-sonnet": "tier_3_15",
    "claude-sonnet-4": "tier_3_15_long",
    "claude-sonnet-4-0": "tier_3_15_long",
    "claude-sonnet-4-5": "tier_3_15_long",
    "claude-sonnet-4-6": "tier_3_15_long",
    "claude-sonnet-5": "tier_2_10",
    "claude-sonnet-5-5": "tier_2_10_cache_read_0_10",
    "claude-3-opus": "tier_15_75",
    "claude-opus-4": "tier_15_75",
    "claude-opus-4-0": "tier_15_75",
    "claude-opus-4-1": "tier_15_75",
    "claude-opus-4-5": "tier_5_25",
    "claude-opus-4-6": "tier_5_25",
    "claude-opus-4-7": "tier_5_25",
    "claude-opus-4-8": "tier_5_25",
    "claude-opus-5": "tier_5_25",
    "claude-opus-5-5": "tier_4_20_cache_read_0_20",
    "claude-fable-5": "tier_10_50",
    "claude-fable-5-1": "tier_10_50_cache_read_0_25",
    "claude-fable-5-2": "tier_8_40_cache_read_0_20",
    "claude-mythos-5": "tier_10_50",
    "claude-mythos-5-1": "tier_10_50_cache_read_0_25",
}

_SUFFIX = re.compile(r"(-\d{8}|-latest|-fast|-v\d+(:\d+)?|\[[^\]]*\])+$")


def _most_expensive(tiers: list[str]) -> Price:
    def worst(price: Price) -> tuple[float, float]:
        top = price.long or price
        return (top.output, top.input)

    return max((TIERS[t] for t in tiers), key=worst)


def price_for(model: str) -> Price:
    """The price of `model` (e.g. `claude-sonnet-4-5-20250929`); see the module docstring."""
    name = _SUFFIX.sub("", model.strip().lower())
    name = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]  # provider prefixes: "anthropic."
    if name in MODELS:
        return TIERS[MODELS[name]]
    family = next((f for f in ("opus", "sonnet", "haiku", "fable", "mythos") if f in name), None)
    same_family = [t for m, t in MODELS.items() if family and family in m]
    return _most_expensive(same_family or list(MODELS.values()))


def cost_usd(model: str, usage: Mapping[str, Any]) -> float:
    """USD for one answer's `usage` (Anthropic's usage object, counts in tokens)."""
    price = price_for(model)
    inp = usage.get("input_tokens") or 0
    out = usage.get("output_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    split = usage.get("cache_creation") or {}
    if not isinstance(split, dict):
        split = {}
    write_1h = split.get("ephemeral_1h_input_tokens") or 0
    # The split is authoritative when present; the total covers both when it is larger.
    write_5m = max(write - write_1h, split.get("ephemeral_5m_input_tokens") or 0, 0)
    write = write_5m + write_1h
    if price.long and price.long_prompt_above and inp + read + write > price.long_prompt_above:
        price = price.long
    total = (
        inp * price.input
        + out * price.output
        + write_5m * price.cache_write_5m
        + write_1h * price.cache_write_1h
        + read * price.cache_read
    )
    tools = sum(SERVER_TOOL_USD[k] * n for k, n in server_tool_requests(usage).items())
    return total / 1_000_000 + tools


def server_tool_requests(usage: Mapping[str, Any]) -> dict[str, int]:
    """Priced server-tool calls in `usage.server_tool_use` (e.g. web_search_requests)."""
    calls = usage.get("server_tool_use")
    if not isinstance(calls, dict):
        return {}
    return {k: int(v) for k, v in calls.items()
            if k in SERVER_TOOL_USD and isinstance(v, int | float) and v > 0}
