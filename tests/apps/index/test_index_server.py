"""The ``--uri`` path against a real, separate Milvus gRPC server process (``milvus-lite server``, started here on
loopback): ``index`` writes to it over the network while a service started with ``serve --uri`` searches it, and
sees newly indexed photos without a restart (the way to index while serving: the server owns the data folder)."""
from __future__ import annotations

import pytest
from helpers import require_module, torch_threads

require_module("fastapi")
require_module("pymilvus")
require_module("milvus_lite")
require_module("pillow_heif")

from photo_library import make_library, photo_bytes, write  # noqa: E402
from serve_helpers import MilvusLiteServer  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ernievil2torch.apps.index import index_photos  # noqa: E402
from ernievil2torch.apps.serve import server  # noqa: E402
from ernievil2torch.apps.serve.app import create_app  # noqa: E402
from ernievil2torch.apps.serve.engine import SearchEngine  # noqa: E402
from ernievil2torch.pretrained import load_pretrained  # noqa: E402
from ernievil2torch.retrieval.milvus import DatabaseBusyError, connect  # noqa: E402


@pytest.fixture
def milvus_server(tmp_path):
    """``milvus-lite server`` on 127.0.0.1 in its own process; yields (uri, data folder, process)."""
    data = tmp_path / "server.db"
    with MilvusLiteServer(data) as running:
        yield running.uri, data, running.process


def test_index_and_serve_share_a_server_and_the_service_sees_new_photos(milvus_server, model_folder, tmp_path):
    uri, data, process = milvus_server
    import psutil

    listening = [c.laddr for c in psutil.Process(process.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip in ("127.0.0.1", "::ffff:127.0.0.1") for a in listening), listening
    with pytest.raises(DatabaseBusyError, match="another process"):
        connect(str(data))  # the server owns the folder: embedded use of it is refused, clearly
    model = model_folder("tiny224", 4, vocab="synthetic")
    photos = make_library(tmp_path / "photos")
    first = index_photos(str(model), [str(photos)], uri=uri, progress=False)
    assert (first.added, first.rows, len(first.failed)) == (7, 7, 1)
    with torch_threads(1):
        library = server._searchable(str(model), None, None, None, "memory", None, uri, None,
                                     str(tmp_path / "thumbs"))
        with TestClient(create_app(SearchEngine(load_pretrained(model), library)),
                        base_url="http://127.0.0.1:8000") as client:
            hits = client.get("/v1/search", params={"q": "照片", "k": 50}).json()["results"]
            assert len(hits) == 7
            write(photos / "later" / "new.jpg", photo_bytes(40))
            again = index_photos(str(model), [str(photos)], uri=uri, progress=False)  # while the service runs
            assert (again.added, again.unchanged, again.embedded) == (1, 7, 1)
            hits = client.get("/v1/search", params={"q": "照片", "k": 50, "folder": "later"}).json()["results"]
            assert [h["path"] for h in hits] == ["later/new.jpg"]
            assert client.get(hits[0]["thumb_url"]).status_code == 200
            assert client.get("/healthz").json()["gallery_size"] == 8
