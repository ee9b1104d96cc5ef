"""Every command line's ``--help``: each option explained, defaults shown, plain text."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from export.cli import build_export_parser, build_verify_parser
from gallery.cli import build_parser as gallery_parser
from reid.clihelp import HelpFormatter, plain_text
from reid.color_baseline import build_parser as color_baseline_parser
from reid.data.__main__ import build_parser as data_parser
from reid.data.synthetic.generate import build_parser as synthetic_parser
from trainer.cli import build_parser as trainer_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "python -m gallery": gallery_parser,
    "python -m trainer": trainer_parser,
    "python -m export": build_export_parser,
    "python -m export verify": build_verify_parser,
    "python -m reid.data": data_parser,
    "python -m reid.data.synthetic": synthetic_parser,
    "python -m reid.color_baseline": color_baseline_parser,
}


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and all its sub-command parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        yield action


ALL = [(name, sub) for name, build in PARSERS.items() for sub in walk(build())]


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[p.prog for _, p in ALL])
def test_every_option_has_a_help_text_and_shows_its_default(name, parser):
    assert issubclass(parser.formatter_class, HelpFormatter), parser.prog
    for action in options(parser):
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{parser.prog} {label}: no help text"
    text = " ".join(parser.format_help().split())  # unwrapped
    for action in options(parser):
        default = action.default
        if default is None or default is False or default == [] or not action.option_strings:
            continue
        shown = str(default) if "%(default)" in (action.help or "") else None
        assert (
            "default" in (action.help or "")
            or f"(default: {default})" in text
            or (shown and shown in text)
        ), f"{parser.prog} {action.option_strings}: default {default!r} not shown"


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[p.prog for _, p in ALL])
def test_help_is_plain_text_without_rst_markup(name, parser):
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text and ":func:" not in text, text


def test_the_api_key_default_comes_from_the_environment_and_is_never_printed(monkeypatch):
    monkeypatch.setenv("REID_API_KEY", "very-secret-key")
    text = gallery_parser().format_help() + "".join(
        sub.format_help() for sub in walk(gallery_parser())
    )
    assert "very-secret-key" not in text and "$REID_API_KEY" in text


def test_plain_text_removes_double_backticks():
    assert plain_text("Run ``python -m x`` now.") == "Run python -m x now."


def test_the_formatter_keeps_examples_and_wraps_paragraphs():
    parser = argparse.ArgumentParser(
        prog="p",
        description="A long paragraph " * 10 + "\n\n    python -m p --flag\n\nlast",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--n", type=int, default=3, help="how many")
    parser.add_argument("--x", default="a", help="x (default %(default)s)")
    text = parser.format_help()
    assert "\n    python -m p --flag\n" in text
    assert "how many (default: 3)" in text and "x (default a)" in text
    assert max(len(line) for line in text.splitlines()) <= 80
