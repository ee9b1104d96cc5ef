"""The one plain-text table renderer of the project (built on ``rich``).

Every table a command prints (result tables, dataset summaries, the parity gate) goes
through :func:`render_table`, so they all look alike::

      mAP |  mINP |     R1
    ------+-------+-------
    75.00 | 50.00 | 100.00

The output is ASCII only, never coloured and never wrapped to the terminal width, so it
is the same on a terminal, in a pipe, in a log file and in a test.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Literal

from rich import box
from rich.console import Console
from rich.table import Table

Justify = Literal["left", "right", "center"]

__all__ = ["render_table"]

_WIDTH = 10_000  # never wrap: a table is as wide as its content


def render_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    justify: Justify | Sequence[Justify] = "right",
    indent: int = 0,
) -> str:
    """``header`` and ``rows`` as an ASCII table (no trailing newline).

    ``justify`` is one alignment for every column or one per column; cells are turned
    into text with ``str``; ``indent`` spaces are put before every line.
    """
    aligns = [justify] * len(header) if isinstance(justify, str) else list(justify)
    if len(aligns) != len(header):
        raise ValueError(f"{len(aligns)} alignments for {len(header)} columns")
    table = Table(box=box.ASCII2, show_edge=False, pad_edge=False, safe_box=True)
    for name, align in zip(header, aligns, strict=True):
        table.add_column(str(name), justify=align, no_wrap=True)
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"a row has {len(cells)} cells for {len(header)} columns")
        table.add_row(*cells)
    out = io.StringIO()
    console = Console(
        file=out,
        width=_WIDTH,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )
    console.print(table, markup=False, highlight=False)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in lines)
