"""The parity gate: exported runtime vs PyTorch eager on real images.

Per image: cosine similarity between the two embeddings (min and mean reported).
With labeled query/gallery images: CMC/mAP computed with each, and the mAP
difference in points. FP32 exports must reach ``min cosine >= 0.9999`` and
``|delta mAP| <= 0.1`` points; FP16/INT8 results are reported (gated only when
thresholds for them are given).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from export.images import GateImages
from reid.metrics import evaluate_features
from reid.runtimes import Runtime
from reid.tables import render_table

EMBED_CHUNK = 64


@dataclass(frozen=True)
class Thresholds:
    """Gate limits; ``None`` means "report only" (the default for FP16/INT8)."""

    fp32_min_cosine: float = 0.9999
    fp32_max_map_diff: float = 0.1  # mAP points (percent)
    lowp_min_cosine: float | None = None
    lowp_max_map_diff: float | None = None

    def for_precision(self, precision: str) -> tuple[float | None, float | None]:
        if precision == "fp32":
            return self.fp32_min_cosine, self.fp32_max_map_diff
        return self.lowp_min_cosine, self.lowp_max_map_diff


@dataclass
class RuntimeResult:
    """One exported runtime compared with the PyTorch reference."""

    format: str
    runtime: str
    device: str
    precision: str
    min_cosine: float
    mean_cosine: float
    metrics: dict[str, float] | None
    map_diff: float | None  # points; runtime mAP - reference mAP
    gated: bool
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    """Everything the gate measured; ``to_dict()`` goes into the manifest's ``parity``."""

    data: str
    images: int
    device: str
    thresholds: Thresholds
    reference: dict[str, float] | None
    results: list[RuntimeResult]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self) -> list[str]:
        return [f"{r.format}/{r.precision}: {msg}" for r in self.results for msg in r.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "data": self.data,
            "images": self.images,
            "device": self.device,
            "thresholds": asdict(self.thresholds),
            "reference": {
                "runtime": "pytorch-eager",
                "precision": "fp32",
                "metrics": self.reference,
            },
            "runtimes": [{**asdict(r), "passed": r.passed} for r in self.results],
            "notes": list(self.notes),
            "checked": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Disable TF32 on CUDA so the reference is true FP32."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def embed_reference(model: nn.Module, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """PyTorch eager embeddings (eval mode, FP32) of a preprocessed batch."""
    model = model.eval().to(device)
    parts = []
    with strict_fp32(), torch.inference_mode():
        for start in range(0, len(images), EMBED_CHUNK):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + EMBED_CHUNK]))
            parts.append(model(batch.to(device)).float().cpu().numpy())
    return np.concatenate(parts).astype(np.float32)


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two ``[N, D]`` arrays (float64)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    return (ref * cand).sum(axis=1) / np.maximum(norms, 1e-30)


def rank_metrics(feats: np.ndarray, data: GateImages) -> dict[str, float] | None:
    """mAP / mINP / rank-k in percent, or ``None`` when the data cannot be ranked."""
    if not data.can_rank:
        return None
    q, g = feats[: data.num_query], feats[data.num_query :]
    try:
        result = evaluate_features(q, g, data.q_pids, data.g_pids, data.q_camids, data.g_camids)
    except ValueError:  # e.g. no query with a valid match in the bounded subset
        return None
    scores = result.as_dict()
    return {k: 100.0 * float(v) for k, v in scores.items() if not k.startswith("num_")}


def compare(
    fmt: str,
    runtime: Runtime,
    precision: str,
    reference: np.ndarray,
    reference_metrics: dict[str, float] | None,
    data: GateImages,
    thresholds: Thresholds,
) -> RuntimeResult:
    """Embed ``data`` with ``runtime`` and check it against the reference embeddings."""
    feats = runtime.embed(data.images)
    failures = []
    if feats.shape != reference.shape:
        failures.append(f"output shape {list(feats.shape)} != reference {list(reference.shape)}")
        return RuntimeResult(
            fmt,
            runtime.name,
            runtime.device,
            precision,
            float("nan"),
            float("nan"),
            None,
            None,
            True,
            failures,
        )
    cosines = row_cosines(reference, feats)
    min_cos, mean_cos = float(np.min(cosines)), float(np.mean(cosines))
    metrics = rank_metrics(feats, data)
    diff = None
    if metrics is not None and reference_metrics is not None:
        diff = metrics["mAP"] - reference_metrics["mAP"]
    min_cosine, max_diff = thresholds.for_precision(precision)
    if not np.isfinite(feats).all():
        failures.append("non-finite embeddings")
    if min_cosine is not None and not min_cos >= min_cosine:
        failures.append(f"min cosine {min_cos:.6f} < {min_cosine}")
    if max_diff is not None and diff is not None and not abs(diff) <= max_diff:
        failures.append(f"|delta mAP| {abs(diff):.3f} points > {max_diff}")
    gated = min_cosine is not None or max_diff is not None
    return RuntimeResult(
        fmt,
        runtime.name,
        runtime.device,
        precision,
        min_cos,
        mean_cos,
        metrics,
        diff,
        gated,
        failures,
    )


def run_gate(
    model: nn.Module,
    runtimes: Sequence[tuple[str, Runtime, str]],
    data: GateImages,
    *,
    device: str = "cpu",
    thresholds: Thresholds | None = None,
) -> ParityReport:
    """Compare every ``(format, runtime, precision)`` with ``model`` on ``data``."""
    thresholds = thresholds or Thresholds()
    reference = embed_reference(model, data.images, device)
    reference_metrics = rank_metrics(reference, data)
    notes = []
    if reference_metrics is None:
        notes.append("no rankable query/gallery set: CMC/mAP not compared (cosine only)")
    results = [
        compare(fmt, rt, precision, reference, reference_metrics, data, thresholds)
        for fmt, rt, precision in runtimes
    ]
    return ParityReport(
        data.description, len(data), device, thresholds, reference_metrics, results, notes
    )


def format_report(report: ParityReport) -> str:
    """The report as a small plain-text table."""
    header = [
        "format",
        "runtime",
        "device",
        "precision",
        "min cos",
        "mean cos",
        "mAP",
        "R1",
        "dmAP pts",
        "gate",
    ]
    rows = []
    ref = report.reference or {}
    rows.append(
        [
            "pytorch",
            "eager",
            report.device,
            "fp32",
            "-",
            "-",
            _pct(ref.get("mAP")),
            _pct(ref.get("rank1")),
            "-",
            "reference",
        ]
    )
    for r in report.results:
        metrics = r.metrics or {}
        gate = ("pass" if r.passed else "FAIL") if r.gated else "report"
        rows.append(
            [
                r.format,
                r.runtime,
                r.device,
                r.precision,
                f"{r.min_cosine:.6f}",
                f"{r.mean_cosine:.6f}",
                _pct(metrics.get("mAP")),
                _pct(metrics.get("rank1")),
                "-" if r.map_diff is None else f"{r.map_diff:+.3f}",
                gate,
            ]
        )
    lines = [render_table(header, rows, justify="left")]
    lines.append(f"data: {report.data}")
    lines += [f"note: {n}" for n in report.notes]
    verdict = "PASSED" if report.passed else "FAILED: " + "; ".join(report.failures)
    lines.append(f"parity gate {verdict}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
