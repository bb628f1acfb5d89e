"""Image preprocessing against an OpenCV implementation of the official pipeline (written here)."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from ernievil2torch.errors import InputError
from ernievil2torch.constants import IMAGENET_MEAN, IMAGENET_STD
from ernievil2torch.processing.image import ErnieViL2ImageProcessor

from helpers import require_module, shared_file

cv2 = require_module("cv2")


def cv_decode(buf: bytes) -> np.ndarray:
    """What the official ``imageloader`` does: cv2.imdecode(IMREAD_COLOR) then BGR->RGB."""
    bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cv_official_crop(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """The official group_scale + group_center_crop with OpenCV."""
    h, w = rgb.shape[:2]
    if (w <= h and w == size) or (h <= w and h == size):
        img = rgb
    elif w < h:
        img = cv2.resize(rgb, (size, int(float(size) / w * h) + 1), interpolation=cv2.INTER_LINEAR)
    else:
        img = cv2.resize(rgb, (int(float(size) / h * w) + 1, size), interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    x1, y1 = math.ceil((w - size) / 2.0), math.ceil((h - size) / 2.0)
    return img[y1:y1 + size, x1:x1 + size]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def proc():
    return ErnieViL2ImageProcessor()


def assert_within_one(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (224, 224, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.05  # OpenCV's fixed point is reproduced; only its scalar tail rounds differently


@pytest.mark.parametrize("name", ["cat.jpg", "dog.jpg", "cyberpunk.jpg"])
def test_demo_images_match_opencv(proc, name):
    path = shared_file("images", name)
    buf = path.read_bytes()
    ref_rgb = cv_decode(buf)
    ours_rgb = proc.load_image(path)
    # Decoder parity: Pillow and OpenCV decode these JPEGs identically (both use libjpeg-turbo, ISLOW IDCT).
    assert ours_rgb.shape == ref_rgb.shape
    assert np.abs(ours_rgb.astype(int) - ref_rgb).max() <= 1
    assert_within_one(proc.resize_crop(ref_rgb), cv_official_crop(ref_rgb))
    assert_within_one(proc.crops(buf)[0], cv_official_crop(ref_rgb))
    pixels = proc(path)
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == torch.float32


@pytest.mark.parametrize("w, h", [(1, 1), (223, 500), (500, 223), (224, 224), (225, 224), (224, 225), (3000, 20),
                                  (20, 3000), (640, 480), (448, 448), (7, 3), (1000, 999)])
def test_sizes_match_opencv(proc, w, h):
    rgb = np.random.default_rng(w * 10007 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert_within_one(proc.resize_crop(rgb), cv_official_crop(rgb))


def test_no_resize_when_short_side_is_224(proc):
    rgb = np.random.default_rng(1).integers(0, 256, (300, 224, 3), dtype=np.uint8)
    assert np.array_equal(proc.resize_crop(rgb), rgb[38:262])  # ceil(76 / 2) = 38


def _modes():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (60, 80, 1), dtype=np.uint8)
    grey16 = (base[:, :, 0].astype(np.uint16) * 257 + rng.integers(0, 256, (60, 80))).astype(np.uint16)
    return {
        "grey": encode(Image.fromarray(base[:, :, 0]), "PNG"),
        "grey_alpha": encode(Image.fromarray(base[:, :, 0]).convert("LA"), "PNG"),
        "rgba": encode(Image.fromarray(np.concatenate([base, alpha], 2)), "PNG"),
        "palette": encode(Image.fromarray(base).quantize(64), "PNG"),
        "palette_transparency": encode(Image.fromarray(base).quantize(64), "PNG", transparency=3),
        "bilevel": encode(Image.fromarray(base[:, :, 0] > 128), "PNG"),
        "cmyk_jpeg": encode(Image.fromarray(base).convert("CMYK"), "JPEG", quality=95),
        "grey16_png": encode(Image.fromarray(grey16), "PNG"),
        "rgb_jpeg": encode(Image.fromarray(base), "JPEG"),
        "gif": encode(Image.fromarray(base).quantize(64), "GIF"),
        "webp_lossless": encode(Image.fromarray(base), "WEBP", lossless=True),
        "bmp": encode(Image.fromarray(base), "BMP"),
    }


@pytest.mark.parametrize("kind, buf", list(_modes().items()))
def test_modes_decode_like_opencv(proc, kind, buf):
    ours = proc.load_image(buf)
    ref = cv_decode(buf)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    # exact, except CMYK JPEG: Pillow's and OpenCV's CMYK->RGB formulas differ by at most one level
    assert np.abs(ours.astype(int) - ref).max() <= (1 if kind == "cmyk_jpeg" else 0)
    assert_within_one(proc.resize_crop(ref), cv_official_crop(ref))  # the pipeline on the same decoded array


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_like_opencv(proc, orientation):
    base = np.random.default_rng(orientation).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (9, 9), 3)  # smooth, so JPEG blocks do not dominate
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = encode(Image.fromarray(base), "JPEG", quality=95, exif=exif.tobytes())
    ours = proc.load_image(buf)
    ref = cv_decode(buf)  # IMREAD_COLOR applies EXIF orientation
    assert ours.shape == ref.shape and ours.shape[:2] != base.shape[:2] or orientation == 3
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_inputs_and_normalisation(proc):
    rgb = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    png = encode(Image.fromarray(rgb), "PNG")
    a = proc(rgb)
    for other in (png, Image.fromarray(rgb), [rgb], (png,)):
        assert torch.equal(proc(other), a)
    crop = proc.crops(rgb)[0].astype(np.float64) / 255.0
    expected = (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(a[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert proc([rgb, png, rgb[:, :, 0]]).shape == (3, 3, 224, 224)
    small = ErnieViL2ImageProcessor(image_size=32)
    assert small(rgb).shape == (1, 3, 32, 32)


def test_path_inputs(proc, tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (230, 250, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    assert torch.equal(proc(path), proc(str(path)))
    assert torch.equal(proc(path), proc(rgb))


def test_animated_uses_first_frame(proc):
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = proc.load_image(buf.getvalue())
    assert tuple(out[0, 0]) == (255, 0, 0)


def bad_images(tmp_path: Path) -> Dict[str, Tuple[object, str]]:
    """label -> (input, text its InputError must contain); RELIABILITY.md counts these cases."""
    good = encode(Image.new("RGB", (50, 50)), "JPEG")
    (tmp_path / "text.txt").write_text("not an image")
    return {
        "zero-byte": (b"", "image #0"),
        "not an image": (b"hello, world" * 10, "image #0"),
        "truncated JPEG": (good[: len(good) // 2], "image #0"),
        "corrupt JPEG": (good[:100] + b"\x00" * 50 + good[150:200], "image #0"),
        "missing path": (tmp_path / "missing.jpg", "missing.jpg"),
        "bad item inside a batch": ([good, b"junk"], "image #1"),
        "text file": (tmp_path / "text.txt", "text.txt"),
        "None": (None, "image #0 (NoneType): got None instead of an image"),
        "an int": (3, "image #0 (int): unsupported input type int"),
        "float array": (np.zeros((5, 5, 3), np.float32), "numpy images must be uint8 HxWx3 RGB, got dtype float32"),
        "2-channel array": (np.zeros((5, 5, 2), np.uint8), "got shape (5, 5, 2)"),
        "empty array": (np.zeros((0, 5, 3), np.uint8), "empty image of shape (0, 5, 3)"),
        "empty list": ([], "empty image list: give at least one image"),
    }


BAD_IMAGE_CASES = 13  # len(bad_images(...)), checked below


def test_bad_inputs(proc, tmp_path):
    cases = bad_images(tmp_path)
    assert len(cases) == BAD_IMAGE_CASES
    for label, (item, needle) in cases.items():
        with pytest.raises(InputError) as info:
            proc(item)
        assert needle in str(info.value), (label, str(info.value))


def test_decompression_bomb_limit_kept(proc, monkeypatch):
    buf = encode(Image.new("L", (200, 200)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 pixels > 2 x limit: Pillow refuses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="decompression bomb"):
            proc(buf)


def test_paddlenlp_variant(tmp_path):
    proc = ErnieViL2ImageProcessor(resample="paddlenlp")
    rgb = np.random.default_rng(5).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    # PaddleNLP: PIL bicubic, long side int(224 * 500 / 300) = 373, floor offsets ((373 - 224) // 2 = 74)
    ref = np.asarray(Image.fromarray(rgb).resize((373, 224), Image.Resampling.BICUBIC))[:, 74:298]
    assert np.array_equal(proc.resize_crop(rgb), ref)
    assert proc(rgb).shape == (1, 3, 224, 224)
    official = ErnieViL2ImageProcessor().resize_crop(rgb)
    assert not np.array_equal(official, ref)
    with pytest.raises(InputError):
        ErnieViL2ImageProcessor(resample="bicubic")


_PADDLENLP_IMAGE_SCRIPT = '''
import sys
import numpy as np
from PIL import Image
from paddlenlp.transformers import ErnieViLImageProcessor

inputs = np.load(sys.argv[1])
proc = ErnieViLImageProcessor()  # built in code: nothing is downloaded
out = {k: proc(Image.fromarray(inputs[k]), return_tensors="np")["pixel_values"][0] for k in inputs.files}
np.savez(sys.argv[2], **out)
'''


@pytest.mark.oracle
def test_paddlenlp_variant_matches_paddlenlp(tmp_path):
    from helpers import oracle_python, run_oracle

    oracle_python()
    rng = np.random.default_rng(11)
    # (PaddleNLP itself fails on 1-pixel-high images: it takes the first axis of a 1xWx3 array for channels.)
    images = {f"{w}x{h}": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
              for w, h in [(500, 300), (300, 500), (224, 224), (225, 224), (3000, 20), (640, 480), (5, 7)]}
    np.savez(tmp_path / "in.npz", **images)
    script = tmp_path / "paddlenlp_image.py"
    script.write_text(_PADDLENLP_IMAGE_SCRIPT, encoding="utf-8")
    run_oracle(script, tmp_path / "in.npz", tmp_path / "out.npz")
    ref = np.load(tmp_path / "out.npz")
    proc = ErnieViL2ImageProcessor(resample="paddlenlp")
    for name, rgb in images.items():
        ours = proc(rgb)[0].numpy()
        assert ours.shape == ref[name].shape
        assert np.abs(ours - ref[name]).max() < 1e-5, name


# ---- fast_decode: JPEGs decoded at a reduced DCT scale ---------------------------------------------------------------
def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, soft blobs and sensor noise: the frequency content of a photo, not uniform noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(x / (width / 13) + c) * np.cos(y / (height / 11) - c) for c in range(3)], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(width / 40, width / 6)
        img += rng.uniform(-70, 70, 3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _expected_reduced_size(width: int, height: int, size: int = 224) -> Tuple[int, int]:
    """The contract: the largest scale 1/s (s in 8, 4, 2, 1) that keeps both sides >= size; sides round up."""
    scale = next(s for s in (8, 4, 2, 1) if width // s >= size and height // s >= size) \
        if min(width, height) >= size else 1
    return -(-width // scale), -(-height // scale)


@pytest.mark.parametrize("w,h", [(1600, 1200), (1000, 460), (448, 448), (447, 900), (300, 200), (3000, 224)])
def test_fast_decode_keeps_both_sides_at_least_the_image_size(w, h):
    data = encode(Image.fromarray(photo_like(w, h)), "JPEG", quality=90)
    rgb = ErnieViL2ImageProcessor(fast_decode=True).load_image(data)
    assert (rgb.shape[1], rgb.shape[0]) == _expected_reduced_size(w, h)
    assert min(rgb.shape[:2]) >= min(224, w, h)
    assert ErnieViL2ImageProcessor(fast_decode=True)([data]).shape == (1, 3, 224, 224)


def test_fast_decode_is_close_to_the_official_pipeline_on_a_photo():
    """Reduced-size decoding averages blocks where the official resize samples pixels: close, not equal."""
    data = encode(Image.fromarray(photo_like(2000, 1500)), "JPEG", quality=90)
    official = ErnieViL2ImageProcessor().crops([data])[0].astype(np.int64)
    fast = ErnieViL2ImageProcessor(fast_decode=True).crops([data])[0].astype(np.int64)
    diff = np.abs(official - fast)
    assert 0 < diff.mean() < 4 and np.percentile(diff, 99) <= 16, (diff.mean(), np.percentile(diff, 99))


def test_fast_decode_changes_nothing_but_jpegs_and_is_off_by_default(proc):
    png = encode(Image.fromarray(photo_like(900, 700)), "PNG")
    jpeg = encode(Image.fromarray(photo_like(900, 700)), "JPEG", quality=90)
    fast = ErnieViL2ImageProcessor(fast_decode=True)
    assert np.array_equal(fast.load_image(png), proc.load_image(png))
    assert proc.fast_decode is False and proc.load_image(jpeg).shape == (700, 900, 3)
    assert "fast_decode=True" in repr(fast) and "fast_decode" not in repr(proc)
    with pytest.raises(InputError, match="fast_decode must be True or False"):
        ErnieViL2ImageProcessor(fast_decode="yes")


@pytest.mark.parametrize("orientation", [6, 8])
def test_fast_decode_applies_exif_orientation_and_the_pixel_limit_on_the_full_size(orientation):
    img = Image.fromarray(photo_like(1200, 800))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(img, "JPEG", quality=90, exif=exif.tobytes())
    fast = ErnieViL2ImageProcessor(fast_decode=True)
    w, h = _expected_reduced_size(1200, 800)  # 1/2 scale
    assert fast.load_image(data).shape == (w, h, 3)  # then turned upright: 600 rows of 400
    from ernievil2torch.errors import ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match="1,200 x 800|1200 x 800"):
        fast.load_image(data, max_pixels=1200 * 800 - 1)
