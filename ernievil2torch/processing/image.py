"""ERNIE-ViL 2.0 image preprocessing: decode, resize the short side, centre-crop, normalise.

``resample="official"`` (default) reproduces Baidu's evaluation pipeline (``Research/ERNIE-ViL2/ernievil2/utils/
preprocess_image.py``, ``decode_image_base64(..., data_augument=True, mode='test')``, which uses OpenCV):

1. decode to 8-bit RGB;
2. resize so the short side is ``image_size`` (224) with bilinear interpolation, OpenCV ``INTER_LINEAR`` semantics
   (pixel centres at +0.5, no antialiasing, edge pixels repeated). The long side becomes
   ``int(224 / short * long) + 1`` (sic, the ``+1`` is in the official code; a square image becomes 225x224),
   computed in Python floats exactly as there. An image whose short side already is 224 is not resized at all.
   Small images (even 1x1) are upsampled the same way;
3. centre-crop ``image_size`` x ``image_size`` at offsets ``ceil((W - 224) / 2)``, ``ceil((H - 224) / 2)``;
4. ``/255``, ImageNet mean ``[0.485, 0.456, 0.406]`` and std ``[0.229, 0.224, 0.225]``, CHW float32.

Only the 224x224 window that survives the crop is interpolated (each output pixel from its four source pixels), so
extreme aspect ratios (say 3000x20, resized to 33601x224 by the official code) cost no more than a square image.
The arithmetic is OpenCV's 8-bit fixed point (11-bit weights); results equal ``cv2.resize(..., INTER_LINEAR)``
except for rare pixels that OpenCV computes in its scalar tail, which differ by one grey level.

``resample="paddlenlp"`` reproduces PaddleNLP 2.8.1's ``ErnieViLImageProcessor``: Pillow bicubic resize (with
Pillow's antialiasing) of the short side to 224, long side ``int(224 * long / short)`` (no ``+1``), centre crop at
``floor`` offsets, same normalisation. It resizes the whole image, as PaddleNLP does.

``fast_decode=True`` (both modes; off by default) decodes a JPEG at the smallest DCT scale (1/2, 1/4 or 1/8, the
decoder's own reduced-size decoding) that still leaves both sides at least ``image_size``, then applies the same
resize and crop. A 12-megapixel photo then decodes at 500x375 instead of 4000x3000, several times faster, but the
pixels differ from the official pipeline's: the reduced decode averages each 8x8 block where the official
bilinear resize samples four pixels. BENCHMARKS.md gives the measured pixel difference and feature cosine. Other
formats decode in full either way.

Decoding (both modes) uses Pillow: EXIF orientation is applied (as ``cv2.imread``/``cv2.imdecode`` with
``IMREAD_COLOR`` do), animated images give their first frame, and every mode becomes 8-bit RGB the way OpenCV's
``IMREAD_COLOR`` would: alpha is dropped (not composited), greyscale is replicated, palettes are expanded, 16-bit
samples keep their high byte (``v >> 8``). Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) stays in
force, and :meth:`ErnieViL2ImageProcessor.load_image` can apply a stricter ``max_pixels`` and restrict the formats it
opens (a service taking uploads does both). Anything that cannot be decoded raises :class:`InputError` naming the
item; too many pixels raise its subclass :class:`ImageTooLargeError`.
"""
from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..constants import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from ..errors import ImageTooLargeError, InputError

__all__ = ["ErnieViL2ImageProcessor", "official_resize_shape", "official_crop_box", "official_window"]

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def official_resize_shape(width: int, height: int, size: int = IMAGE_SIZE) -> Tuple[int, int]:
    """``(new_width, new_height)`` of the official ``group_scale``; the input size when no resize happens."""
    if (width <= height and width == size) or (height <= width and height == size):
        return width, height
    if width < height:
        return size, int(float(size) / width * height) + 1
    return int(float(size) / height * width) + 1, size


def official_crop_box(width: int, height: int, size: int = IMAGE_SIZE) -> Tuple[int, int]:
    """``(left, top)`` of the official centre crop (``ceil`` of half the excess)."""
    return math.ceil((width - size) / 2.0), math.ceil((height - size) / 2.0)


def official_window(rgb: np.ndarray, left: int, top: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """The ``size`` x ``size`` window at ``(left, top)`` of an 8-bit RGB HWC array after the official short-side
    resize (:func:`official_resize_shape`, OpenCV ``INTER_LINEAR`` semantics), uint8 HWC.

    Only the window is interpolated. The eval pipeline takes the centre window (:func:`official_crop_box`); the
    training augmentation takes a random one. ``ValueError`` if the window does not fit the resized image.
    """
    h, w = rgb.shape[:2]
    new_w, new_h = official_resize_shape(w, h, size)
    if not (0 <= left <= new_w - size and 0 <= top <= new_h - size):
        raise ValueError(f"window ({left}, {top}) of size {size} is outside the resized {new_w}x{new_h} image")
    if (new_w, new_h) == (w, h):
        return np.ascontiguousarray(rgb[top:top + size, left:left + size])
    return _bilinear_window(rgb, new_w, new_h, left, top, size)


def _linear_taps(src_len: int, dst_len: int, start: int, count: int):
    """Source indices and weights of OpenCV INTER_LINEAR for output positions ``start .. start+count-1``."""
    scale = 1.0 / (dst_len / src_len)  # OpenCV: inv_scale = dst/src, scale = 1/inv_scale (double)
    pos = np.arange(start, start + count, dtype=np.float64)
    f = ((pos + 0.5) * scale - 0.5).astype(np.float32).astype(np.float64)  # OpenCV keeps fx as float
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0
    low = i0 < 0
    i0[low], frac[low] = 0, 0.0
    high = i0 >= src_len - 1
    i0[high], frac[high] = src_len - 1, 0.0
    i1 = np.minimum(i0 + 1, src_len - 1)
    return i0, i1, frac


def _bilinear_window(src: np.ndarray, dst_w: int, dst_h: int, left: int, top: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (left, top) of ``src`` resized to (dst_w, dst_h), uint8 HWC.

    Integer arithmetic as in OpenCV's 8-bit INTER_LINEAR: weights rounded to 11 bits, horizontal sums kept as
    ints, the vertical step as OpenCV's vectorised path computes it. OpenCV's scalar tail (the last few elements of
    each resized row, depending on the CPU's vector width) rounds slightly differently: at most one grey level.
    """
    h, w = src.shape[:2]
    x0, x1, fx = _linear_taps(w, dst_w, left, size)
    y0, y1, fy = _linear_taps(h, dst_h, top, size)
    ax1 = np.rint(fx * 2048).astype(np.int32)[None, :, None]
    ax0 = np.rint((1.0 - fx) * 2048).astype(np.int32)[None, :, None]
    by1 = np.rint(fy * 2048).astype(np.int32)[:, None, None]
    by0 = np.rint((1.0 - fy) * 2048).astype(np.int32)[:, None, None]
    flat = src.reshape(-1, src.shape[2])

    def gather(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        idx = (ys[:, None] * w + xs[None, :]).ravel()
        return np.take(flat, idx, axis=0).reshape(size, size, -1).astype(np.int32)

    h0 = gather(y0, x0) * ax0
    h0 += gather(y0, x1) * ax1
    h1 = gather(y1, x0) * ax0
    h1 += gather(y1, x1) * ax1
    h0 >>= 4
    h0 *= by0
    h0 >>= 16
    h1 >>= 4
    h1 *= by1
    h1 >>= 16
    h0 += h1
    h0 += 2
    h0 >>= 2
    return np.clip(h0, 0, 255).astype(np.uint8)


def _describe(item: object, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return f"image #{index} ('{os.fspath(item)}')"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"image #{index} ({len(item)} bytes)"
    return f"image #{index} ({type(item).__name__})"


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """8-bit RGB HWC array from any Pillow mode, the way OpenCV's IMREAD_COLOR would produce it."""
    try:
        transposed = ImageOps.exif_transpose(img)
        if transposed is not None:
            img = transposed
    except Exception:  # a broken EXIF block: keep the pixels as stored, like OpenCV
        pass
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16") or mode == "I":
        grey = (np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.floor(np.asarray(img, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency expressed in bytes ..."
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


class ErnieViL2ImageProcessor:
    """Images to ``pixel_values`` [B, 3, S, S] float32 (S = ``image_size``, 224 for the released model).

    Accepts, alone or in a list/tuple: a file path (``str``/``Path``), encoded bytes, a ``PIL.Image.Image``, or an
    HWC ``uint8`` RGB numpy array (``H x W`` greyscale and ``H x W x 4`` RGBA arrays are accepted too, alpha dropped).
    See the module docstring for the exact pipeline of each ``resample`` mode.
    """

    def __init__(self, image_size: int = IMAGE_SIZE, resample: str = "official", fast_decode: bool = False) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise InputError(f"image_size must be a positive int, got {image_size!r}")
        if resample not in ("official", "paddlenlp"):
            raise InputError(f"resample must be 'official' or 'paddlenlp', got {resample!r}")
        if not isinstance(fast_decode, bool):
            raise InputError(f"fast_decode must be True or False, got {fast_decode!r}")
        self.image_size = image_size
        self.resample = resample
        self.fast_decode = fast_decode
        self.image_mean = IMAGENET_MEAN
        self.image_std = IMAGENET_STD

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike, None] = None, **kwargs) -> "ErnieViL2ImageProcessor":
        """The default processor (the released model has no preprocessing settings to read)."""
        return cls(**kwargs)

    def __repr__(self) -> str:
        fast = ", fast_decode=True" if self.fast_decode else ""
        return f"{type(self).__name__}(image_size={self.image_size}, resample={self.resample!r}{fast})"

    # ---- decoding ---------------------------------------------------------------------------------------------
    def load_image(self, image: ImageInput, index: int = 0, *, max_pixels: Optional[int] = None,
                   formats: Optional[Sequence[str]] = None) -> np.ndarray:
        """Decode one input to an 8-bit RGB HWC array (EXIF orientation applied, first frame of animations).

        For encoded inputs (a path or bytes): ``max_pixels`` refuses, from the header and before any pixel is
        decoded, an image with more than that many pixels (:class:`ImageTooLargeError`; Pillow's own
        decompression-bomb limit applies as well); ``formats`` (Pillow format names such as ``"JPEG"``) is the only
        formats Pillow may try, so a file of any other kind is "not a recognised image format". With
        ``fast_decode`` a JPEG comes back at a reduced DCT scale (both sides still >= ``image_size``).
        """
        name = _describe(image, index)
        if isinstance(image, np.ndarray):
            return self._check_array(image, name)
        if isinstance(image, Image.Image):
            try:
                image.load()
                return _pil_to_rgb_array(image)
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise InputError(f"{name}: cannot read the PIL image: {exc}") from exc
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise InputError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
            source: object = path
        elif isinstance(image, (bytes, bytearray, memoryview)):
            if len(image) == 0:
                raise InputError(f"{name}: empty (zero bytes), not an image")
            source = io.BytesIO(bytes(image))
        elif image is None:
            raise InputError(f"{name}: got None instead of an image")
        else:
            raise InputError(f"{name}: unsupported input type {type(image).__name__}; give a path, bytes, a "
                             "PIL image or an HxWx3 uint8 RGB numpy array")
        try:
            with Image.open(source, formats=None if formats is None else list(formats)) as img:
                if max_pixels is not None and img.width * img.height > max_pixels:
                    raise ImageTooLargeError(f"{name}: refused, {img.width} x {img.height} = "
                                             f"{img.width * img.height:,} pixels is more than the limit of "
                                             f"{max_pixels:,}")
                img.seek(0)
                if self.fast_decode and img.format == "JPEG":
                    img.draft(None, (self.image_size, self.image_size))  # both sides stay >= image_size
                img.load()
                return _pil_to_rgb_array(img)
        except InputError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name}: refused, too many pixels (decompression bomb limit "
                             f"Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}): {exc}") from exc
        except UnidentifiedImageError as exc:
            raise InputError(f"{name}: not a recognised image format") from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
            raise InputError(f"{name}: corrupt or truncated image: {exc}") from exc

    @staticmethod
    def _check_array(arr: np.ndarray, name: str) -> np.ndarray:
        if arr.dtype != np.uint8:
            raise InputError(f"{name}: numpy images must be uint8 HxWx3 RGB, got dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise InputError(f"{name}: numpy images must be HxWx3 RGB (or HxW grey, HxWx4 RGBA), got shape "
                             f"{tuple(arr.shape)}")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(f"{name}: empty image of shape {tuple(arr.shape)}")
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[:, :, :3]
        return np.ascontiguousarray(arr)

    # ---- geometry ---------------------------------------------------------------------------------------------
    def resize_crop(self, rgb: np.ndarray) -> np.ndarray:
        """Resize and centre-crop a decoded RGB array: ``image_size`` x ``image_size`` x 3 uint8, before
        normalisation (what the official code holds just before ``/255``)."""
        size = self.image_size
        h, w = rgb.shape[:2]
        if self.resample == "paddlenlp":
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(size * long / short)
            new_w, new_h = (size, new_long) if w <= h else (new_long, size)
            resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC))
            top, left = (new_h - size) // 2, (new_w - size) // 2
            return np.ascontiguousarray(resized[top:top + size, left:left + size])
        left, top = official_crop_box(*official_resize_shape(w, h, size), size)
        return official_window(rgb, left, top, size)

    def crops(self, images: Union[ImageInput, Sequence[ImageInput]]) -> List[np.ndarray]:
        """Decoded, resized and cropped uint8 HWC arrays, one per image."""
        batch = self._as_list(images)
        return [self.resize_crop(self.load_image(item, i)) for i, item in enumerate(batch)]

    def normalize(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 HWC crops to normalised float32 [B, 3, S, S]."""
        stack = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(torch.float64) / 255.0
        mean = torch.tensor(self.image_mean, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float64).view(1, 3, 1, 1)
        return ((stack - mean) / std).to(torch.float32).contiguous()

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]) -> torch.Tensor:
        """``pixel_values`` [B, 3, S, S] float32 for one image or a list of images."""
        return self.normalize(self.crops(images))

    @staticmethod
    def _as_list(images) -> list:
        if isinstance(images, (list, tuple)):
            if not images:
                raise InputError("empty image list: give at least one image")
            return list(images)
        return [images]

