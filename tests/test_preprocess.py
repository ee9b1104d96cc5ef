"""The single preprocessing path shared by evaluation, export checks and serving."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from reid.preprocess import (
    ImageTooLargeError,
    PreprocessConfig,
    PreprocessError,
    decode_image_bytes,
    preprocess_batch,
    preprocess_image,
)


def encode(image_rgb: np.ndarray, fmt: str = ".png") -> bytes:
    ok, data = cv2.imencode(fmt, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def test_output_is_normalised_float32_chw_at_the_model_size():
    config = PreprocessConfig(height=32, width=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = np.full((50, 20, 3), 255, dtype=np.uint8)
    out = preprocess_image(white, config)
    assert out.dtype == np.float32
    assert out.shape == (3, 32, 16)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # (1 - 0.5) / 0.5


def test_channels_keep_rgb_order_and_use_per_channel_mean_and_std():
    config = PreprocessConfig(height=8, width=8, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red
    out = preprocess_image(image, config)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -1.0, -4.0], atol=1e-6)


def test_batch_stacks_images_of_different_sizes():
    config = PreprocessConfig(height=16, width=8)
    images = [np.zeros((40, 10, 3), np.uint8), np.zeros((9, 33, 3), np.uint8)]
    assert preprocess_batch(images, config).shape == (2, 3, 16, 8)


def test_grey_and_rgba_inputs_become_rgb():
    config = PreprocessConfig(height=8, width=8)
    grey = np.full((8, 8), 128, np.uint8)
    rgba = np.full((8, 8, 4), 128, np.uint8)
    np.testing.assert_array_equal(preprocess_image(grey, config), preprocess_image(rgba, config))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 2), np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "zero"),
        ("not an array", "numpy"),
    ],
)
def test_invalid_arrays_are_rejected_with_a_reason(image, message):
    with pytest.raises(PreprocessError, match=message):
        preprocess_image(image, PreprocessConfig(height=8, width=8))


def test_config_round_trips_through_a_dict_and_validates():
    config = PreprocessConfig(height=128, width=64, interpolation="bicubic")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(interpolation="lanczos9")
    with pytest.raises(ValueError, match="too small"):
        PreprocessConfig(height=2, width=64)


def test_decoding_png_bytes_gives_the_original_rgb_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(12, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image_bytes(encode(image)), image)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image", "not a decodable image"),
    ],
)
def test_bad_bytes_are_rejected(data, message):
    with pytest.raises(PreprocessError, match=message):
        decode_image_bytes(data)


def test_truncated_jpeg_is_rejected():
    image = np.random.default_rng(1).integers(0, 255, size=(64, 32, 3), dtype=np.uint8)
    data = encode(image, ".jpg")
    with pytest.raises(PreprocessError):
        decode_image_bytes(data[:40], max_pixels=10_000)


def test_oversized_images_are_refused_from_the_header_before_decoding():
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(buffer, format="PNG")
    with pytest.raises(ImageTooLargeError, match="3000x2000"):  # a PreprocessError
        decode_image_bytes(buffer.getvalue(), max_pixels=1_000_000)


def test_a_jpeg_cut_short_is_refused_rather_than_half_decoded():
    image = np.random.default_rng(2).integers(0, 255, size=(128, 64, 3), dtype=np.uint8)
    data = encode(image, ".jpg")
    with pytest.raises(PreprocessError, match="truncated"):
        decode_image_bytes(data[: int(len(data) * 0.8)])


def test_files_and_uploaded_bytes_decode_to_identical_pixels(tmp_path):
    from reid.data.io import ImageReadError, read_image_rgb

    image = np.random.default_rng(3).integers(0, 255, size=(30, 20, 3), dtype=np.uint8)
    data = encode(image, ".jpg")
    path = tmp_path / "crop.jpg"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image_rgb(path), decode_image_bytes(data))
    with pytest.raises(ImageReadError, match="not found"):
        read_image_rgb(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg.*empty"):
        read_image_rgb(tmp_path / "empty.jpg")


# -- deep, float and large images (issue 17) -----------------------------------------------


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(fmt):
    deep = Image.fromarray(np.full((8, 4), 40000, np.uint16))
    assert (decode_image_bytes(_png(deep, fmt)) == 40000 >> 8).all()


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(np.full((8, 4), 0.5, np.float32), mode="F"),
        Image.fromarray(np.full((8, 4), 7, np.int32), mode="I"),
    ],
    ids=["float", "32-bit integer"],
)
def test_float_and_32_bit_images_are_refused_not_embedded_as_black(image):
    from reid.preprocess import UnsupportedImageError

    with pytest.raises(UnsupportedImageError, match="send 8- or 16-bit images"):
        decode_image_bytes(_png(image, "TIFF"))


def test_decode_errors_name_no_object_reprs():
    with pytest.raises(PreprocessError) as info:
        decode_image_bytes(b"certainly not an image")
    assert " at 0x" not in str(info.value) and "not a decodable image" in str(info.value)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_min_size_shrinks_large_images_by_an_integer_factor_as_they_are_decoded(mode):
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (700, 300, 3), dtype=np.uint8))
    image = {"RGBA": pixels.convert("RGBA"), "P": pixels.convert("P"), "L": pixels.convert("L")}
    if mode == "I;16":
        image[mode] = Image.fromarray(np.asarray(pixels.convert("L")).astype(np.uint16) * 257)
    data = _png(image.get(mode, pixels))
    full = decode_image_bytes(data)
    small = decode_image_bytes(data, min_size=(64, 32))  # factor min(300 // 32, 700 // 64) = 9
    assert small.shape == (78, 34, 3)  # never below min_size
    np.testing.assert_array_equal(small, np.asarray(Image.fromarray(full).reduce(9)))
    tiny = _png(Image.new("RGB", (40, 100)))  # less than twice min_size: decoded as is
    assert decode_image_bytes(tiny, min_size=(64, 32)).shape == (100, 40, 3)


def test_large_jpegs_are_decoded_at_reduced_scale_but_never_below_min_size():
    data = _png(Image.new("RGB", (2000, 4000), (200, 30, 60)), "JPEG")
    small = decode_image_bytes(data, min_size=(256, 128))
    assert small.shape[0] >= 256 and small.shape[1] >= 128 and small.shape[0] <= 512
    np.testing.assert_allclose(small.mean(axis=(0, 1)), (200, 30, 60), atol=3)


# -- JPEG through libjpeg-turbo (simplejpeg), Pillow for the rest (issue 19) ---------------


def _jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **options)
    return out.getvalue()


def _noisy(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth image with noise: every DCT coefficient matters, as in a real photo."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(
        rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), np.uint8)
    )
    base = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), np.int16)
    return Image.fromarray(
        np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    )


def _pillow_only(monkeypatch, data: bytes, **kwargs) -> np.ndarray:
    """What decode_image_bytes gives without libjpeg-turbo's direct path."""
    import reid.preprocess as preprocess

    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "simplejpeg", None)
        return decode_image_bytes(data, **kwargs)


def _counting_turbo(monkeypatch) -> list[int]:
    """Counts simplejpeg.decode_jpeg calls from reid.preprocess."""
    import reid.preprocess as preprocess

    calls: list[int] = []
    real = preprocess.simplejpeg.decode_jpeg

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocess.simplejpeg, "decode_jpeg", counted)
    return calls


JPEG_CASES = {
    "model-size 4:2:0": (_noisy(64, 128), {"quality": 90}),
    "odd size 4:4:4": (_noisy(63, 127, 1), {"quality": 95, "subsampling": 0}),
    "4:2:2 progressive": (
        _noisy(257, 513, 2),
        {"quality": 80, "subsampling": 1, "progressive": True},
    ),
    "grey": (_noisy(130, 260, 3).convert("L"), {"quality": 90}),
    "large 4:2:0": (_noisy(1000, 2000, 4), {"quality": 85}),
    "wide frame": (_noisy(1920, 1080, 5), {"quality": 75}),
}


@pytest.mark.parametrize(
    "min_size", [None, (128, 64), (256, 128)], ids=["full", "128x64", "256x128"]
)
@pytest.mark.parametrize("case", list(JPEG_CASES))
def test_jpegs_decode_to_the_same_pixels_with_libjpeg_turbo_as_with_pillow(
    monkeypatch, case, min_size
):
    """The direct path gives Pillow's pixels exactly, full size or DCT-scaled (1/2, 1/4,
    1/8 then box-reduced): same bytes, same pixels, whichever path decoded them."""
    image, options = JPEG_CASES[case]
    data = _jpeg(image, **options)
    expected = _pillow_only(monkeypatch, data, min_size=min_size)
    calls = _counting_turbo(monkeypatch)
    got = decode_image_bytes(data, min_size=min_size)
    assert calls, "the JPEG did not go through libjpeg-turbo"
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_cmyk_and_damaged_jpegs_go_through_pillow_with_its_answers(monkeypatch):
    cmyk = _jpeg(_noisy(64, 128).convert("CMYK"))
    np.testing.assert_array_equal(decode_image_bytes(cmyk), _pillow_only(monkeypatch, cmyk))
    data = _jpeg(_noisy(128, 256), quality=90)
    for damaged in (data[: len(data) // 2], data[:40]):
        with pytest.raises(PreprocessError) as direct:
            decode_image_bytes(damaged)
        with pytest.raises(PreprocessError) as pillow:
            _pillow_only(monkeypatch, damaged)
        assert str(direct.value) == str(pillow.value)
    from reid.preprocess import image_size

    assert image_size(data) == (128, 256)
    with pytest.raises(ImageTooLargeError, match="128x256 = 32768 pixels"):
        decode_image_bytes(data, max_pixels=30_000)


def test_normalising_into_a_batch_gives_the_plain_formula():
    config = PreprocessConfig(height=16, width=8)
    image = np.random.default_rng(4).integers(0, 256, (16, 8, 3), np.uint8)
    mean = np.asarray(config.mean, np.float32) * 255
    std = np.asarray(config.std, np.float32) * 255
    plain = (image.astype(np.float32).transpose(2, 0, 1) - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_array_equal(preprocess_batch([image, image], config)[1], plain)


def test_real_photo_crops_embed_as_they_did_through_pillow(monkeypatch):
    """Real photographs, cut to person-crop shapes at and above the model size, decoded as
    the server does (model-size ``min_size``: DCT scaling for the large ones) through
    libjpeg-turbo and through Pillow only: the bundled ImageNet MobileNetV2 embeds them
    alike (the pixels are in fact identical)."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the photos")
    torch = pytest.importorskip("torch")
    from reid.models.backbones import build_backbone

    try:
        model = build_backbone("mobilenetv2", pretrained="imagenet").eval()
    except Exception as exc:  # the weights ship in a package the Makefile installs
        pytest.skip(f"no bundled MobileNetV2 weights: {exc}")
    photos = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()]
    crops = [
        photo[top : top + height, left : left + height // 2]
        for photo in photos
        for top, left, height in ((0, 0, 128), (60, 150, 300), (10, 40, 400))
    ]
    config = PreprocessConfig(height=128, width=64)
    data = [_jpeg(Image.fromarray(np.ascontiguousarray(c)), quality=90) for c in crops]
    calls = _counting_turbo(monkeypatch)
    direct = preprocess_batch([decode_image_bytes(d, min_size=(128, 64)) for d in data], config)
    assert len(calls) == len(data)
    pillow = preprocess_batch(
        [_pillow_only(monkeypatch, d, min_size=(128, 64)) for d in data], config
    )
    with torch.no_grad():
        a, b = (model(torch.from_numpy(x)).flatten(1) for x in (direct, pillow))
    cosine = torch.nn.functional.cosine_similarity(a, b).numpy()
    assert cosine.min() >= 0.999, cosine
