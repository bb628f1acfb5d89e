"""Shared pieces of the serve tests: a gallery of test images, models, hostile uploads, a real server process.

* ``write_gallery_images(root)``: the shared photos (cat, dog, cyberpunk; when ../shared/data is there), the three
  drawn demo shapes and generated pictures, some in a sub-folder with a Chinese name.
* ``tiny_model_dir(root)``: a 2-layer model with the real input sizes (224 px, 40,000-token synthetic vocab).
* ``embedded_gallery(root, model_dir)``: that gallery under ``root/images``, embedded into ``root/gallery``.
* ``png_header_only(w, h)``: a valid PNG header declaring ``w`` x ``h`` pixels with almost no data (a bomb).
* ``ServerProcess``: ``ernievil2 serve`` as a user starts it (a subprocess), with its printed address.
* ``MilvusLiteServer``: a ``milvus-lite server`` process (a Milvus gRPC server) on a free loopback port.
"""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ernievil2torch.config import tiny224_config
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.data.demo import demo_images
from ernievil2torch.verify.synthetic import write_synthetic_pdparams, write_synthetic_vocab

REPO = Path(__file__).resolve().parents[1]
#: The shared demo photos, where every test looks for shared data ($ERNIEVIL2_SHARED_DATA, else ../shared/data;
#: not helpers.shared_data_dir: benchmarks/serve_load.py imports this module without the tests' path); the gallery
#: is complete without them (generated images), so their absence is no failure here.
SHARED_IMAGES = Path(os.environ.get("ERNIEVIL2_SHARED_DATA") or REPO.parent / "shared" / "data") / "images"
#: Chinese queries used by the tests (every character is in the synthetic vocab).
QUERIES = ("一只猫", "一只在草地上奔跑的狗", "赛博朋克风格的城市夜景", "一个红色的圆形", "蓝色")


def write_gallery_images(root: Path, generated: int = 6) -> List[str]:
    """Write the test gallery under ``root``; returns the ids (relative paths) in the order ``embed`` lists them."""
    root.mkdir(parents=True, exist_ok=True)
    if SHARED_IMAGES.is_dir():
        for name in ("cat.jpg", "dog.jpg", "cyberpunk.jpg"):
            if (SHARED_IMAGES / name).is_file():
                (root / name).write_bytes((SHARED_IMAGES / name).read_bytes())
    for name, image in zip(("红色圆形.png", "蓝色方块.png", "绿色三角形.png"), demo_images()):
        image.save(root / name)
    album = root / "相册"
    album.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(generated):
        h, w = int(rng.integers(180, 300)), int(rng.integers(180, 300))
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, (1, 1, 3))
        noise = rng.normal(0, 25, (h, w, 3))
        picture = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        ImageDraw.Draw(picture).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4),
                                        fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        picture.save(album / f"照片{i:02d}.{'jpg' if i % 2 else 'png'}", quality=90)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def tiny_model_dir(root: Path, seed: int = 3) -> Path:
    """A 2-layer random model with 224 px images and a 40,000-token synthetic vocab, converted into ``root`` from
    a synthetic ``.pdparams`` with the same code as ``convert.py`` (so it is marked as synthetic)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    source = write_synthetic_pdparams(root.parent / f"synthetic_tiny224_seed{seed}.pdparams", tiny224_config(),
                                      "official", seed=seed)
    vocab = write_synthetic_vocab(root.parent / "synthetic_vocab.txt")
    convert_checkpoint(source, root, vocab=vocab)
    return root


def embedded_gallery(root: Path, model_dir: Path) -> List[str]:
    """The test gallery in ``root/images`` embedded by ``embed`` into ``root/gallery``; returns its ids."""
    from ernievil2torch.apps.embed import embed

    ids = write_gallery_images(root / "images")
    embed(str(root / "images"), str(model_dir), str(root / "gallery"), kind="image", batch_size=8, num_workers=0,
          progress=False)
    return ids


def png_bytes(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 8-bit grey pixels but holds one compressed row: what a
    decompression bomb looks like before decoding (a few hundred bytes claiming hundreds of megapixels)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1), 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def console_command(*args: str) -> List[str]:
    """The ``ernievil2`` console command line (run through this interpreter)."""
    return [sys.executable, "-c", "from ernievil2torch.cli import main; main()", *args]


class ServerProcess:
    """``ernievil2 serve ...`` in a subprocess; ``url`` is the address it printed. Use as a context manager."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None, startup_timeout: float = 240) -> None:
        self.args, self.env, self.startup_timeout = list(args), env, startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.output: List[str] = []
        self._reader = threading.Thread()

    def __enter__(self) -> "ServerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self.proc = subprocess.Popen(console_command("serve", *self.args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        # Read everything it prints on a thread: a full pipe would block the server's logging.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.url and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
            found = re.search(r"serving on (http://\S+/)", "".join(self.output))
            self.url = found.group(1) if found else ""
        while self.url and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise AssertionError("server did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> int:
        """Ctrl-C the server and wait for it; returns its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    @property
    def text(self) -> str:
        return "".join(self.output)

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MilvusLiteServer:
    """``milvus-lite server --data-dir DATA`` on 127.0.0.1 (a free port) in its own process, for the ``--uri``
    path: ``uri`` is its address, ``process`` the Popen. The context waits until the port accepts connections
    (AssertionError with its output when it exits or ``startup_timeout`` passes) and terminates it on exit, waiting
    ``stop_timeout`` seconds for it to close its data folder (a large one takes long) before killing it."""

    def __init__(self, data: Path, startup_timeout: float = 60, stop_timeout: float = 60) -> None:
        self.data, self.startup_timeout, self.stop_timeout = Path(data), startup_timeout, stop_timeout
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "MilvusLiteServer":
        code = "import sys; from milvus_lite.cmdline import main; sys.exit(main())"
        self.process = subprocess.Popen([sys.executable, "-c", code, "server", "--data-dir", str(self.data),
                                         "--host", "127.0.0.1", "--port", str(self.port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise AssertionError(f"milvus-lite server did not start: {self.process.stdout.read()}")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
