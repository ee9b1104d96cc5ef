"""``python -m export``: see :mod:`export.cli`."""

from reid.clihelp import require_module

require_module("torch", "python -m export", extra="train")

from export.cli import main  # noqa: E402

raise SystemExit(main())
