"""DukeMTMC-reID: the Market-1501 folder layout with Duke's file names.

``ROOT/bounding_box_train/``, ``ROOT/bounding_box_test/``, ``ROOT/query/`` (``ROOT``
may also hold a single ``DukeMTMC-reID*`` folder). A name reads
``PPPP_cC_fFFFFFFF.jpg``: identity, camera ``C`` (1-based, c1-c8) and the frame number
after ``f``. The junk/distractor and non-image rules are those of
:mod:`reid.data.market1501`.
"""

from __future__ import annotations

import re
from pathlib import Path

from reid.data.base import ReIDDataset
from reid.data.market1501 import NamingConvention, load_market_layout

DUKEMTMC_NAMES = NamingConvention(
    dataset="DukeMTMC-reID",
    pattern=re.compile(r"(?P<pid>-1|\d{4})_c(?P<cam>[1-9]\d*)_f(?P<frame>\d+)", re.ASCII),
    form="PPPP_cC_fFFFFFFF.jpg (pid 4 digits, camera c1, c2, ..., frame number after 'f')",
    example="0001_c2_f0046182.jpg",
)


def load_dukemtmc(root: str | Path) -> ReIDDataset:
    """Load DukeMTMC-reID from ``root``."""
    return load_market_layout(
        root, name="dukemtmc", convention=DUKEMTMC_NAMES, subfolder_prefix="DukeMTMC-reID"
    )
