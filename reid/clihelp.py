"""One argparse help formatter for every command line of the project.

:class:`HelpFormatter` wraps descriptions paragraph by paragraph (keeping indented
examples as written) and
appends ``(default: X)`` to an option's help when it has a real default (not ``None``,
not a ``False`` switch) that the help text does not already state.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["HelpFormatter", "plain_text", "require_module"]


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped per paragraph (indented blocks kept as they are), and each
    option's default shown after its help."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):  # an example: keep it
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or "(default " in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def plain_text(docstring: str) -> str:
    """A module docstring made readable in ``--help``: RST ``double backticks`` removed."""
    return re.sub(r"``([^`]*)``", r"\1", docstring).replace("\\\\\n", "\\\n").strip()


def require_module(module: str, command: str, *, extra: str) -> None:
    """Exit with a one-line install hint when ``command`` needs ``module`` and it is missing
    (the serving install has no torch: ``python -m trainer`` says so instead of a trace)."""
    import importlib.util
    import sys

    if importlib.util.find_spec(module) is None:
        sys.exit(
            f"{command} needs {module}, which is not installed here (a serving-only "
            f"install?): pip install 'reid-system[{extra}]'"
        )
