"""Hugging Face Hub ids: which names are one, and the local snapshot folder an id stands for.

A converted directory (``config.json``, ``model.safetensors``, ``vocab.txt``) uploaded as a Hub model repository
loads by its id. The files come through ``huggingface_hub``'s own cache (``HF_HUB_CACHE`` / ``HF_HOME``), so a
model fetched once is read from disk afterwards, and ``HF_HUB_OFFLINE=1`` is honoured: then only the cache is
looked at. ``huggingface_hub`` is imported only when an id is resolved (the converter and the command line stay
cheap to import); it is a dependency of ``transformers`` and pinned in ``requirements.txt``.

Spellings: ``ORG/NAME``, ``ORG/NAME@REVISION`` (a branch, tag or commit), and ``hf-hub:ORG/NAME[@REVISION]``
(open_clip's prefix; it also admits a legacy id without an organisation). A bare ``ORG/NAME`` is a Hub id only
when no such local path exists (:func:`~ernievil2torch.config.resolve_model` asks the disk first).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..constants import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME
from ..errors import CheckpointError

HUB_PREFIX = "hf-hub:"
#: The files of a converted directory that a Hub snapshot is asked for (nothing else in the repository is fetched).
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME)

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_ID = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[A-Za-z0-9._/-]+))?$")
_LEGACY_ID = re.compile(rf"^(?P<repo>{_PART})(?:@(?P<revision>[A-Za-z0-9._/-]+))?$")


@dataclass(frozen=True)
class HubId:
    """A parsed Hub id: the repository (``ORG/NAME``) and the revision (None: the default branch)."""

    repo_id: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> Optional[HubId]:
    """The Hub id ``text`` spells, or None when it is not one (a path with ``./``, several slashes, a backslash,
    characters the Hub refuses, ``--`` or ``..`` inside a name)."""
    explicit = text.startswith(HUB_PREFIX)
    body = text[len(HUB_PREFIX):] if explicit else text
    match = _ID.match(body) or (_LEGACY_ID.match(body) if explicit else None)
    if match is None or "--" in match["repo"] or ".." in match["repo"]:
        return None
    return HubId(match["repo"], match["revision"])


def hub_snapshot(hub_id: HubId) -> Path:
    """The local snapshot folder of ``hub_id`` with the files of :data:`HUB_FILES` the repository has, from the
    cache when it holds them (and always when offline), else downloaded into it.

    Raises :class:`CheckpointError` naming the id when it is neither cached nor reachable (offline, no network, no
    such repository or revision, no access), or when ``huggingface_hub`` is not installed.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{hub_id}: loading a Hub id needs huggingface_hub: "
                              "pip install 'ernievil2torch[hub]'") from None
    try:
        folder = snapshot_download(hub_id.repo_id, revision=hub_id.revision, allow_patterns=list(HUB_FILES))
    except Exception as exc:  # offline and not cached, unreachable, no such repo/revision, gated: all name the id
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{hub_id} is not in the local Hugging Face cache and could not be downloaded "
                              f"({type(exc).__name__}: {reason}); with HF_HUB_OFFLINE=1 only the cache is read") \
            from None
    return Path(folder)
