"""Encoder -> ``model.pt2``: a ``torch.export`` program that runs without model code."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from reid.models.onnx_util import MAX_BATCH


def export_program(model: nn.Module, path: Path, input_size: tuple[int, int]) -> Path:
    """Save ``torch.export.export(model)`` with a dynamic batch axis (1 .. ``MAX_BATCH``).

    Load it with ``torch.export.load(path).module()`` (see ``reid.runtimes.torch_export``).
    """
    if model.training:
        raise ValueError("export_program needs the model in eval mode")
    height, width = input_size
    example = torch.zeros(2, 3, int(height), int(width))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path
