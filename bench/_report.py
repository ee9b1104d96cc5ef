"""Write one benchmark's results as a section of a shared markdown file.

Every benchmark owns one section of ``docs/BENCHMARKS.md`` (its heading, say
``## Evaluation (reid.metrics)``) and rewrites only that section, so several
benchmarks can share the file::

    from _report import machine_summary, update_section
    update_section("docs/BENCHMARKS.md", "## Evaluation (reid.metrics)", body)
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_TITLE = "# Benchmarks"
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def update_section(
    path: str | Path, section_title: str, markdown_body: str, parent: str | None = None
) -> None:
    """Replace the section headed ``section_title`` in ``path`` with ``markdown_body``.

    ``section_title`` is a markdown heading (``"## Name"``; without ``#`` it is taken as
    level 2). The section runs from its heading to the next heading of the same or a
    higher level (headings inside fenced code blocks do not count). A missing file is
    created with a ``# Benchmarks`` title; a missing section is appended at the end, or
    at the end of the section ``parent`` (a heading of a higher level) when that exists.
    """
    path = Path(path)
    level, title = _parse_title(section_title)
    section = [f"{'#' * level} {title}", "", *markdown_body.strip("\n").splitlines()]
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else [DEFAULT_TITLE]
    span = _find_section(lines, level, title)
    outer = None if parent is None else _find_section(lines, *_parse_title(parent))
    if span is None and outer is not None:
        before, after = lines[: outer[1]], lines[outer[1] :]
        while before and not before[-1].strip():
            before.pop()
        lines = [*before, "", *section, *([""] if after else []), *after]
    elif span is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines = [*lines, "", *section]
    else:
        start, end = span
        after = lines[end:]
        lines = [*lines[:start], *section, *([""] if after else []), *after]
    _write_atomically(path, "\n".join(lines) + "\n")


def machine_summary() -> str:
    """One line describing this machine: CPU model, cores, memory, OS, Python, numpy."""
    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page_size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical CPU(s){memory}; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )


def today() -> str:
    """The current date and time (UTC), for the report header."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _parse_title(section_title: str) -> tuple[int, str]:
    match = _HEADING.match(section_title.strip())
    if match:
        return len(match.group(1)), match.group(2)
    return 2, section_title.strip()


def _find_section(lines: list[str], level: int, title: str) -> tuple[int, int] | None:
    """``(start, end)`` line indices of the section, or ``None`` when it is absent."""
    start = None
    in_fence = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        this_level, this_title = len(match.group(1)), match.group(2)
        if start is None and this_level == level and this_title == title:
            start = number
        elif start is not None and this_level <= level:
            return start, number
    return None if start is None else (start, len(lines))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file, keeping the file's mode (0644 for a new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
