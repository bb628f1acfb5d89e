"""``ernievil2 index``: a photo library in Milvus (embedded Milvus Lite or a server), followed incrementally.

Modules, one job each: :mod:`.files` (finding photos, stable ids, content hashes, header facts), :mod:`.catalog`
(collections per model, the alias searches use, failures), :mod:`.crash` (named kill points for the crash tests),
:mod:`.indexer` (the run and its :class:`IndexReport`), :mod:`.bulk` (loading an ``embed`` output: :class:`BulkReport`),
:mod:`.model_hash` (the hash that names a model's embeddings).
"""
from .bulk import BulkReport, load_embeddings
from .catalog import ALIAS, ModelMismatchError
from .indexer import IndexReport, index_photos

__all__ = ["ALIAS", "BulkReport", "IndexReport", "ModelMismatchError", "index_photos", "load_embeddings"]
