"""Synthetic multi-camera pedestrian dataset generator (Market-1501 layout).

``python -m reid.data.synthetic OUT`` writes a dataset; see docs/DATASETS.md.
Identities have persistent attributes (:mod:`.identity`), people are drawn with
OpenCV primitives (:mod:`.render`), crops are composed with bystanders and
occluders (:mod:`.scene`) and imaged through per-camera pipelines (:mod:`.camera`);
:mod:`.generate` plans the dataset and writes it.
"""

from reid.data.synthetic.generate import (
    FORMAT_VERSION,
    GENERATOR_NAME,
    GeneratorParams,
    generate,
    plan_dataset,
)

__all__ = ["FORMAT_VERSION", "GENERATOR_NAME", "GeneratorParams", "generate", "plan_dataset"]
