"""A Hugging Face Hub cache built by the tests: the layout ``huggingface_hub`` reads, nothing downloaded.

``models--ORG--NAME/blobs/<sha256>`` hold the files, ``snapshots/<commit>/<file>`` link to them (relative symlinks,
as the real cache writes), ``refs/<revision>`` holds the commit. :class:`HubCache` also points ``huggingface_hub``
at it, in this process (its ``constants``, read when a function is called) and in child processes (the environment
variables it reads at import): offline by default, or "online" against an endpoint that refuses every connection
(a closed local port), so a test can never reach the network.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path
from typing import Optional


def closed_port_endpoint() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens (a port bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class HubCache:
    """``HubCache(root, monkeypatch)``: an empty cache at ``root``, made the one ``huggingface_hub`` uses."""

    def __init__(self, root: Path, monkeypatch, offline: bool = True) -> None:
        import huggingface_hub.constants as constants

        self.root, self.monkeypatch, self.constants = Path(root), monkeypatch, constants
        self.root.mkdir(parents=True, exist_ok=True)
        self.endpoint = closed_port_endpoint()
        for name, value in (("HF_HUB_CACHE", str(self.root)), ("ENDPOINT", self.endpoint),
                            ("HF_HUB_DISABLE_TELEMETRY", True)):
            monkeypatch.setattr(constants, name, value, raising=False)
        monkeypatch.setenv("HF_HUB_CACHE", str(self.root))
        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.delenv("HF_HOME", raising=False)
        self.set_offline(offline)

    def set_offline(self, offline: bool) -> None:
        """``HF_HUB_OFFLINE`` on or off (off: every request goes to the closed endpoint and fails to connect)."""
        self.monkeypatch.setattr(self.constants, "HF_HUB_OFFLINE", offline)
        self.monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        self.monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def add(self, repo_id: str, folder: Path, revision: str = "main", commit: Optional[str] = None) -> Path:
        """Put every file of ``folder`` into the cache as repository ``repo_id`` at ``revision``; returns the
        snapshot folder. ``commit`` defaults to a hash of the files (40 hex digits, like a git commit)."""
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
        digest = hashlib.sha1()
        for path in files:
            digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
        commit = commit or digest.hexdigest()
        repo = self.root / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "blobs").mkdir(exist_ok=True)
        for path in files:
            blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            if not blob.exists():
                try:
                    os.link(path, blob)  # the same bytes without a copy (a full-size model is 800 MB)
                except OSError:
                    shutil.copyfile(path, blob)
            link = snapshot / path.name
            if not link.exists():
                os.symlink(os.path.relpath(blob, snapshot), link)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        return snapshot
