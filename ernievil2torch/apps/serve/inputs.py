"""What a request carries, checked and decoded before it reaches the model (each refusal an ``InputError``)."""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Optional

import numpy as np
from fastapi import UploadFile

from ...errors import InputError
from .engine import SearchEngine
from .limits import ServeLimits

#: Content types an upload may declare (browsers send image/*; curl and scripts often octet-stream or none).
UPLOAD_CONTENT_TYPES = ("image/", "application/octet-stream")


def upload_name(index: Optional[int], upload: UploadFile) -> str:
    """How errors name an upload: ``file`` or ``files[i]``, with its file name when it has one."""
    where = "file" if index is None else f"files[{index}]"
    return f"{where} {upload.filename!r}" if upload.filename else where


def check_text(text: str, where: str, limits: ServeLimits) -> str:
    """``text`` itself, or an InputError naming ``where`` when it is blank or longer than the limit."""
    if not text.strip():
        raise InputError(f"{where}: empty text")
    if len(text) > limits.max_text_chars:
        raise InputError(f"{where}: {len(text)} characters, more than the limit of {limits.max_text_chars}")
    return text


async def decode_image_upload(upload: UploadFile, name: str, engine: SearchEngine, executor: Executor) -> np.ndarray:
    """The 224x224 crop of an uploaded image, decoded in ``executor`` (never on the event loop).

    Refused (InputError naming ``name``): a declared content type that is not an image, an empty upload, and
    whatever :meth:`~.engine.SearchEngine.decode_upload` refuses.
    """
    declared = (upload.content_type or "").lower()
    if declared and not declared.startswith(UPLOAD_CONTENT_TYPES):
        raise InputError(f"{name}: content type {declared!r} is not an image")
    data = await upload.read()
    if not data:
        raise InputError(f"{name}: empty upload (zero bytes), not an image")
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, engine.decode_upload, data, name)
    except InputError as exc:
        text = str(exc).replace("image #0 (", f"{name} (", 1)
        raise type(exc)(text) from None
