"""Dataset formats, records and the synthetic multi-camera generator.

Load any supported dataset from a spec string::

    from reid.data import load_dataset
    dataset = load_dataset("market1501:/data/Market-1501")
    print(dataset.summary())

Formats (``DATASET_FORMATS``): ``market1501``, ``dukemtmc``, ``msmt17``, ``folder``
(a CSV manifest) and ``synthetic`` (the output of ``python -m reid.data.synthetic``).
The generator itself lives in :mod:`reid.data.synthetic` and is not imported here.
"""

from reid.data.base import (
    DISTRACTOR_PID,
    JUNK_PID,
    DatasetError,
    ImageRecord,
    ReIDDataset,
    label_arrays,
)
from reid.data.spec import DATASET_FORMATS, DatasetSpec, load_dataset, parse_spec

__all__ = [
    "DATASET_FORMATS",
    "DISTRACTOR_PID",
    "JUNK_PID",
    "DatasetError",
    "DatasetSpec",
    "ImageRecord",
    "ReIDDataset",
    "label_arrays",
    "load_dataset",
    "parse_spec",
]
