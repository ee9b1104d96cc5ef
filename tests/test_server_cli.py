"""``python -m server`` flags and environment: generated from ``ServerSettings``.

The specification: every settings field has a flag (kebab-case; booleans both ways),
each flag spelling of the hand-written parser it replaced parses to the same
settings, ``REID_<NAME>`` variables still work and flags win over them.
"""

from __future__ import annotations

import os

import pytest

from server.cli import build_parser, main, settings_from_args
from server.settings import ServerSettings

FIELDS = list(ServerSettings.model_fields)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REID_"):
            monkeypatch.delenv(name)


def option_strings() -> set[str]:
    return {s for action in build_parser()._actions for s in action.option_strings}


def values(settings: ServerSettings) -> dict[str, object]:
    out = settings.model_dump()
    for key in ("api_key", "read_key"):
        secret = getattr(settings, key)
        out[key] = None if secret is None else secret.get_secret_value()
    return out


@pytest.mark.parametrize("field", FIELDS)
def test_every_setting_has_a_flag(field: str) -> None:
    flag = "--" + field.replace("_", "-")
    flags = option_strings()
    assert flag in flags
    if ServerSettings.model_fields[field].annotation is bool:
        assert "--no-" + field.replace("_", "-") in flags


def test_flags_are_only_the_settings() -> None:
    generated = {s.removeprefix("--no-").removeprefix("--") for s in option_strings()}
    assert generated - {"-h", "help"} == {f.replace("_", "-") for f in FIELDS}


# Every flag spelling of the hand-written argparse parser this CLI replaced (and of
# docs/SERVER.md, Dockerfile, scripts/demo.py, bench/bench_server.py, the live tests),
# with the settings that parser gave.
OLD_FLAGS = [
    (["--model", "m", "--gallery", "g"], {"model": "m", "gallery": "g"}),
    (["--model=/x/y", "--http-port=9000"], {"model": "/x/y", "http_port": 9000}),
    (
        ["--host", "0.0.0.0", "--http-port", "0", "--grpc-port", "0"],
        {"host": "0.0.0.0", "http_port": 0, "grpc_port": 0},
    ),
    (["--no-grpc", "--no-batching"], {"grpc": False, "batching": False}),
    (
        ["--runtime", "torch", "--device", "cpu", "--threads", "2", "--index", "hnsw"],
        {"runtime": "torch", "device": "cpu", "threads": 2, "index": "hnsw"},
    ),
    (["--runtime", "tensorrt", "--device", "cuda"], {"runtime": "tensorrt", "device": "cuda"}),
    (["--api-key", "k", "--read-key", "r"], {"api_key": "k", "read_key": "r"}),
    (["--api-key", ""], {"api_key": None}),  # an empty key means no key
    (
        ["--max-batch", "8", "--max-wait-ms", "0.5", "--workers", "3"],
        {"max_batch": 8, "max_wait_ms": 0.5, "workers": 3},
    ),
    (
        ["--max-images", "4", "--max-body-mb", "2", "--max-pixels", "1000", "--max-k", "10"],
        {"max_images": 4, "max_body_mb": 2.0, "max_pixels": 1000, "max_k": 10},
    ),
    (["--expose-export-dir"], {"expose_export_dir": True}),
    (["--log-level", "debug"], {"log_level": "debug"}),
]


@pytest.mark.parametrize(("argv", "changed"), OLD_FLAGS, ids=lambda v: " ".join(map(str, v)))
def test_old_flags_parse_to_the_same_settings(argv: list[str], changed: dict) -> None:
    expected = values(ServerSettings())
    expected.update(changed)
    got = values(settings_from_args(argv))
    got["model"] = None if got["model"] is None else str(got["model"])
    got["gallery"] = None if got["gallery"] is None else str(got["gallery"])
    assert got == expected


def test_settings_that_had_no_flag_have_one() -> None:
    s = settings_from_args(["--max-queue", "16", "--thumbnail-height", "64"])
    assert (s.max_queue, s.thumbnail_height, s.max_full_ranking) == (16, 64, None)
    assert settings_from_args(["--max-full-ranking", "500"]).max_full_ranking == 500
    assert settings_from_args(["--grpc", "--batching"]).grpc is True  # the positive forms


def test_no_flags_gives_the_defaults() -> None:
    assert values(settings_from_args([])) == values(ServerSettings())


def test_environment_variables_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "REID_MODEL": "/exports/a",
        "REID_DEVICE": "cpu",
        "REID_THREADS": "3",
        "REID_GRPC": "false",
        "REID_API_KEY": "from-env",
        "REID_MAX_WAIT_MS": "0.25",
        "REID_MAX_QUEUE": "99",
        "REID_MAX_FULL_RANKING": "7",
        "REID_EXPOSE_EXPORT_DIR": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for s in (ServerSettings(), settings_from_args([])):
        assert (str(s.model), s.device, s.threads, s.grpc) == ("/exports/a", "cpu", 3, False)
        assert s.api_key is not None and s.api_key.get_secret_value() == "from-env"
        assert (s.max_wait_ms, s.max_queue, s.max_full_ranking) == (0.25, 99, 7)
        assert s.expose_export_dir is True
    flagged = settings_from_args(["--threads", "1", "--grpc", "--api-key", ""])
    assert (flagged.threads, flagged.grpc, flagged.api_key) == (1, True, None)  # flags win
    assert flagged.max_queue == 99  # the environment stays where no flag is given


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        settings_from_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m server")
    for field in FIELDS:
        assert "--" + field.replace("_", "-") in text
    assert "REID_<NAME>" in text and "--max-batch is REID_MAX_BATCH" in " ".join(text.split())
    assert "--model DIR" in text and "--max-batch N" in text and "--api-key KEY" in text


def test_the_settings_table_in_the_docs_lists_every_flag() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "SERVER.md").read_text()
    for field in FIELDS:
        assert f"`--{field.replace('_', '-')}" in docs or f"`--no-{field.replace('_', '-')}" in docs
        assert f"`REID_{field.upper()}" in docs


def test_bad_values_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--threads", "zero"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad setting: threads:") and err.count("\n") == 1
    assert main(["--http-port", "70000"]) == 2
    assert "http_port" in capsys.readouterr().err
    assert main(["--runtime", "tflite"]) == 2
    assert "runtime: Input should be 'onnxruntime', 'tensorrt' or 'torch'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as info:  # argparse: an unknown flag
        settings_from_args(["--no-such-flag"])
    assert info.value.code == 2


def test_the_event_loop_is_asyncios_unless_uvloop_is_asked_for() -> None:
    import asyncio

    from server.cli import event_loop_factory

    uvloop = pytest.importorskip("uvloop")

    assert settings_from_args([]).loop == "asyncio"
    assert event_loop_factory("asyncio") is None
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=event_loop_factory("uvloop")) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_asking_for_a_missing_uvloop_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert main(["--loop", "uvloop"]) == 2
    assert capsys.readouterr().err == (
        "error: --loop uvloop: uvloop is not installed (pip install uvloop)\n"
    )
