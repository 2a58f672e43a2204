"""Plain aligned tables for listings that can be long (`ps`, `results`).

Rich's Table measures every cell and costs ~1.3 ms a row: 1.4 s for 1,000 runs, over the
1 s that `ps` and `results` may take (bench/results_scale.py). These are columns of short,
single-line cells, so they are padded here instead (2 ms for 1,000 rows); only the title
and the header go through Rich, for their style on a terminal.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rich.cells import cell_len


def clean(cell: str) -> str:
    """One line of printable text: sandbox-written text cannot move the cursor."""
    return "".join(ch for ch in cell if ch.isprintable())


def render(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = ()
) -> tuple[str, list[str]]:
    """The header line and the row lines, columns two spaces apart; `right`: column
    indexes aligned right (numbers). Trailing spaces are stripped."""
    heads = [clean(h) for h in headers]
    body = [[clean(c) for c in row] for row in rows]
    widths = [cell_len(h) for h in heads]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - cell_len(cell))
            out.append(pad + cell if i in right else cell + pad)
        return "  ".join(out).rstrip()

    return line(heads), [line(row) for row in body]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                right: Collection[int] = (), title: str | None = None) -> None:
    """A table on stdout: the title and header in bold on a terminal, plain otherwise."""
    import sys

    from rich.text import Text

    from ml_agent.cli.output import console

    head, lines = render(headers, rows, right=right)
    out = console()
    if title is not None:
        out.print(Text(clean(title), style="bold"), soft_wrap=True)
    out.print(Text(head, style="bold"), soft_wrap=True)
    out.file.flush()
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
