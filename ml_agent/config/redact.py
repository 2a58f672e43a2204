"""Show a value by where it came from, never by value: `${env:NAME}`, not the variable.

The loader records every value it inserted from the environment (and, when a folder
outside the project tree is allowed, from a file there) with the text to show instead.
Whatever is printed (errors in every `--format`, `plan` in text and JSON) goes through a
Redactor; the config and the Plan themselves keep the real values the backends need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ml_agent.config.messages import Diagnostic, KeyPath

#: Values this long or longer are replaced wherever they appear in printed text. A shorter
#: one ("1", "no") is not a secret and would garble unrelated words: it is replaced where
#: it is a whole value (a plan field, a quoted value in an error at its own key).
MIN_LEN = 4

_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_HINT = re.compile(r";? ?did you mean [^;]*?\?", re.IGNORECASE)
HIDDEN_QUOTE = "'<not shown>'"


class Redactor:
    """Replaces recorded values by what to show instead (case-insensitively: validators
    upper-case GPU names and the like)."""

    def __init__(self, shown: Mapping[str, str] | None = None) -> None:
        self.shown: dict[str, str] = {}
        for value, name in (shown or {}).items():
            for v in {value, value.strip()}:
                if v:
                    self.shown.setdefault(v.casefold(), name)
        long = sorted((v for v in self.shown if len(v) >= MIN_LEN), key=len, reverse=True)
        self._long = re.compile("|".join(map(re.escape, long)), re.IGNORECASE) if long else None

    def without(self, values: Iterable[object]) -> Redactor:
        """A redactor that leaves `values` alone (values known to be public)."""
        drop = {v.strip().casefold() for v in values if isinstance(v, str)}
        return Redactor({v: n for v, n in self.shown.items() if v not in drop})

    def __bool__(self) -> bool:
        return bool(self.shown)

    def text(self, text: str) -> str:
        """`text` with every long recorded value replaced."""
        if self._long is None:
            return text
        return self._long.sub(lambda m: self.shown[m.group(0).casefold()], text)

    def value(self, value: str) -> str:
        """A whole value: replaced when it is a recorded one, whatever its length."""
        return self.shown.get(value.strip().casefold()) or self.text(value)

    def data(self, data: Any) -> Any:
        """A copy of JSON-like `data` with every string (keys too) redacted as a value."""
        if isinstance(data, str):
            return self.value(data)
        if isinstance(data, Mapping):
            return {self.data(k): self.data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.data(v) for v in data]
        return data

    def quoted(self, message: str) -> str:
        """A message about a recorded value at its own key: long values replaced, and a
        quoted short one too; hints derived from the value ("did you mean ...") dropped."""
        message = _HINT.sub("", self.text(message))

        def name(m: re.Match[str]) -> str:
            quote, inner = m.group(0)[0], m.group(0)[1:-1]
            shown = self.shown.get(inner.strip().casefold())
            return m.group(0) if shown is None else quote + shown + quote

        return _QUOTED.sub(name, message)


def scrub(message: str) -> str:
    """A message about a file outside the project tree: no quoted text, no hints (they
    may quote the file, and that file may be a secrets file the user allowed by mistake)."""
    return _QUOTED.sub(HIDDEN_QUOTE, _HINT.sub("", message))


def diagnostics(
    diags: Iterable[Diagnostic],
    redactor: Redactor,
    tainted: Iterable[KeyPath] = (),
    outside: Iterable[str] = (),
) -> list[Diagnostic]:
    """Diagnostics fit to print: a problem in a file outside the project tree quotes
    nothing; one at (or around) a value that came from the environment shows
    `${env:NAME}`; every message has every recorded long value replaced."""
    far = set(outside)
    marks = set(tainted)
    out = []
    for d in diags:
        if d.file in far:
            message = scrub(redactor.text(d.message))
        elif redactor and _touches(d.path, marks):
            message = redactor.quoted(d.message)
        else:
            message = redactor.text(d.message)
        out.append(d if message == d.message else d._replace(message=message))
    return out


def _touches(path: KeyPath, marks: set[KeyPath]) -> bool:
    """`path` is a marked path, inside one, or holds one."""
    if any(path[:n] in marks for n in range(len(path) + 1)):
        return True
    n = len(path)
    return any(m[:n] == path for m in marks)
