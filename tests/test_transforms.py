"""Training augmentations and the image dataset that applies them reproducibly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from reid.data.base import DatasetError, ImageRecord
from reid.data.samplers import PKSampler
from reid.data.torch_dataset import (
    ImageDataset,
    SampleKey,
    make_eval_loader,
    make_train_loader,
)
from reid.data.transforms import (
    ColorJitter,
    RandomErasing,
    RandomHorizontalFlip,
    RandomPadCrop,
    build_eval_transform,
    build_train_transform,
)
from reid.preprocess import PreprocessConfig, preprocess_image

CONFIG = PreprocessConfig(height=32, width=16)


def random_image(height: int = 40, width: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- transforms -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 20, 3), (32, 16, 3), (7, 90, 3), (1, 1, 3), (50, 30)])
def test_eval_transform_equals_preprocess_image_exactly(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = build_eval_transform(CONFIG)(image)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), preprocess_image(image, CONFIG))


def test_train_transform_with_augmentations_off_equals_preprocess_image():
    transform = build_train_transform(CONFIG, flip=False, pad=0, erasing_p=0, color_jitter=0)
    for shape in [(40, 20, 3), (32, 16, 3), (9, 70, 3)]:
        image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_array_equal(transform(image).numpy(), preprocess_image(image, CONFIG))


@pytest.mark.parametrize("shape", [(40, 20, 3), (5, 300, 3), (1, 1, 3), (300, 7), (20, 20, 4)])
def test_train_transform_gives_float32_chw_at_the_model_size_for_any_input(shape):
    image = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    transform = build_train_transform(CONFIG, color_jitter=0.2, seed=0)
    for _ in range(5):
        out = transform(image)
        assert out.dtype == torch.float32 and out.shape == (3, 32, 16)
        assert out.is_contiguous()


def test_train_transform_never_edits_its_input():
    image = random_image()
    before = image.copy()
    transform = build_train_transform(CONFIG, erasing_p=1.0, color_jitter=0.3, seed=0)
    for seed in range(10):
        transform(image, rng(seed))
    np.testing.assert_array_equal(image, before)


def test_train_transform_is_deterministic_given_a_seed():
    image = random_image()
    a = build_train_transform(CONFIG, erasing_p=1.0, color_jitter=0.2, seed=5)
    b = build_train_transform(CONFIG, erasing_p=1.0, color_jitter=0.2, seed=5)
    outs_a = [a(image) for _ in range(4)]
    outs_b = [b(image) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b, strict=True))
    assert not torch.equal(outs_a[0], outs_a[1])  # successive calls draw fresh augmentations
    # an explicit generator overrides the transform's own
    assert torch.equal(a(image, rng(9)), b(image, rng(9)))


def test_flip_mirrors_left_right():
    image = random_image()
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(image, rng()), image[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(image, rng()) is image


def test_flip_happens_about_half_the_time():
    image = random_image()
    flip, generator = RandomHorizontalFlip(), rng()
    flipped = sum(not np.array_equal(flip(image, generator), image) for _ in range(400))
    assert 150 < flipped < 250


def find_shift(out: np.ndarray, image: np.ndarray, pad: int) -> tuple[int, int] | None:
    """The (dy, dx) such that ``out`` is the black-padded image shifted by (dy, dx)."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            window = padded[pad + dy : pad + dy + height, pad + dx : pad + dx + width]
            if np.array_equal(out, window):
                return dy, dx
    return None


def test_pad_and_crop_keeps_the_size_and_shifts_the_content():
    image = random_image(24, 12)
    crop, generator = RandomPadCrop(pad=4), rng()
    shifts = set()
    for _ in range(30):
        out = crop(image, generator)
        assert out.shape == image.shape and out.dtype == np.uint8
        shift = find_shift(out, image, pad=4)
        assert shift is not None, "output is the input shifted, with black padding"
        shifts.add(shift)
    assert len(shifts) > 10


def test_reflect_padding_fills_with_image_content():
    image = np.full((24, 12, 3), 200, np.uint8)
    out = RandomPadCrop(pad=6, mode="reflect")(image, rng())
    assert out.shape == image.shape and (out == 200).all()


def test_colour_jitter_keeps_shape_and_changes_colours_mildly():
    image = random_image()
    out = ColorJitter(0.2, 0.2, 0.2)(image, rng())
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 0.25 * 255


def erased_mask(out: torch.Tensor, original: torch.Tensor) -> np.ndarray:
    return (out != original).any(dim=0).numpy()


def test_random_erasing_erases_one_rectangle_within_the_area_bounds():
    original = torch.ones(3, 64, 32)
    erase, generator = RandomErasing(p=1.0), rng()
    for _ in range(50):
        out = erase(original, generator)
        mask = erased_mask(out, original)
        ys, xs = np.nonzero(mask)
        box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert box.all(), "the erased pixels form a filled rectangle"
        assert 0.02 <= mask.mean() <= 0.4
        assert (out[:, mask] == 0).all()  # "mean" fill = the mean colour, 0 once normalised
    assert (original == 1).all(), "the input tensor is never edited in place"


def test_random_erasing_fills_with_random_values_or_given_values():
    original = torch.ones(3, 64, 32)
    noisy = RandomErasing(p=1.0, fill="random")(original, rng())
    mask = erased_mask(noisy, original)
    assert noisy[:, mask].std() > 0.5
    cc = RandomErasing(p=1.0, fill=(0.485, 0.456, 0.406))(original, rng())
    mask = erased_mask(cc, original)
    assert torch.allclose(cc[:, mask], torch.tensor([0.485, 0.456, 0.406])[:, None])


def test_random_erasing_probability():
    original = torch.ones(3, 64, 32)
    assert RandomErasing(p=0.0)(original, rng()) is original
    erase, generator = RandomErasing(p=0.5), rng()
    erased = sum(not torch.equal(erase(original, generator), original) for _ in range(400))
    assert 150 < erased < 250


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RandomErasing(p=1.5), "probability"),
        (lambda: RandomErasing(scale=(0.5, 0.1)), "scale"),
        (lambda: RandomErasing(fill="zeros"), "fill"),
        (lambda: RandomPadCrop(pad=-1), "pad"),
        (lambda: RandomPadCrop(mode="wrap"), "pad mode"),
        (lambda: ColorJitter(brightness=1.5), "brightness"),
    ],
)
def test_bad_augmentation_settings_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- dataset and loaders ----------------------------------------------------------


def write_images(root: Path, count: int) -> list[ImageRecord]:
    records = []
    for i in range(count):
        path = root / f"{i:03d}.png"
        cv2.imwrite(str(path), random_image(40, 20, seed=i))
        records.append(ImageRecord(path=path, pid=i // 2 if i % 5 else None, camid=i % 3))
    return records


@pytest.fixture
def records(tmp_path) -> list[ImageRecord]:
    return write_images(tmp_path, 12)


def test_dataset_returns_named_fields(records):
    item = ImageDataset(records, build_eval_transform(CONFIG))[3]
    assert set(item) == {"image", "index", "label", "camid"}
    assert item["image"].shape == (3, 32, 16)
    assert (item["index"], item["label"], item["camid"]) == (3, 1, 0)
    assert ImageDataset(records, build_eval_transform(CONFIG))[0]["label"] == -1  # unlabeled


def test_pseudo_labels_override_record_identities(records):
    labels = [7] * 6 + [-1] * 6
    dataset = ImageDataset(records, build_eval_transform(CONFIG), labels=labels)
    assert [dataset[i]["label"] for i in (0, 3, 6)] == [7, 7, -1]
    with pytest.raises(ValueError, match="labels for 12 records"):
        ImageDataset(records, build_eval_transform(CONFIG), labels=[0, 1])


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    dataset = ImageDataset([ImageRecord(bad, 1, 0)], build_eval_transform(CONFIG))
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        dataset[0]


def test_augmentation_is_seeded_per_sample_epoch_and_draw(records):
    dataset = ImageDataset(records, build_train_transform(CONFIG, erasing_p=1.0), seed=1)
    first = dataset[SampleKey(2, epoch=0, draw=0)]["image"]
    assert torch.equal(first, dataset[SampleKey(2, 0, 0)]["image"])
    assert not torch.equal(first, dataset[SampleKey(2, 0, 1)]["image"])  # a repeated draw
    assert not torch.equal(first, dataset[SampleKey(2, 1, 0)]["image"])  # the next epoch
    dataset.set_epoch(1)
    assert torch.equal(dataset[2]["image"], dataset[SampleKey(2, 1, 0)]["image"])


def test_plain_single_argument_transforms_are_accepted(records):
    def transform(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, CONFIG))

    assert ImageDataset(records, transform)[0]["image"].shape == (3, 32, 16)


def test_train_loader_gives_the_same_batches_with_and_without_workers(records):
    labels = [i // 2 for i in range(12)]
    transform = build_train_transform(CONFIG, erasing_p=0.5, color_jitter=0.1)

    def epoch_batches(num_workers: int, epoch: int) -> list[dict]:
        sampler = PKSampler(labels, num_instances=2, batch_size=4, seed=0, iters=3)
        sampler.set_epoch(epoch)
        dataset = ImageDataset(records, transform, labels=labels, seed=0)
        return list(make_train_loader(dataset, sampler, batch_size=4, num_workers=num_workers))

    serial, parallel = epoch_batches(0, epoch=2), epoch_batches(2, epoch=2)
    assert len(serial) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
        assert a["image"].shape == (4, 3, 32, 16)
    assert not torch.equal(serial[0]["image"], epoch_batches(0, epoch=3)[0]["image"])


def test_eval_loader_keeps_order_and_uses_the_inference_preprocessing(records):
    loader = make_eval_loader(records, CONFIG, batch_size=5)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [5, 5, 2]
    images = torch.cat([b["image"] for b in batches])
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(12))
    expected = preprocess_image(
        cv2.cvtColor(random_image(40, 20, seed=7), cv2.COLOR_BGR2RGB), CONFIG
    )
    np.testing.assert_array_equal(images[7].numpy(), expected)
