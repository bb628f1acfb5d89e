"""Datasets and inputs; nothing here runs a model.

* :mod:`.formats`: the table of dataset formats and :func:`open_dataset`, the one factory that picks a reader;
* :mod:`.readers`: the reader protocol (:class:`CaptionReader`) and the base of readers with random access
  (:class:`IndexedCaptions`); :mod:`.coco_cn` and :mod:`.caption_folder` are the readers;
* :mod:`.stream`: where a stream stands (:class:`StreamPosition`, what a checkpoint records) and the seeded epoch
  order;
* :mod:`.inputs`: what ``embed`` encodes (image and text listings as items); :mod:`.records`: ``.jsonl`` lines.
"""
from .caption_folder import CaptionFolderReader
from .coco_cn import CocoCnTsvReader
from .formats import (DATASET_FORMATS, DatasetFormat, describe_formats, detect_format, open_dataset,
                      require_random_access)
from .readers import CaptionReader, CaptionSample, ImageSource, IndexedCaptions
from .stream import StreamPosition, epoch_order

__all__ = ["CaptionFolderReader", "CaptionReader", "CaptionSample", "CocoCnTsvReader", "DATASET_FORMATS",
           "DatasetFormat", "ImageSource", "IndexedCaptions", "StreamPosition", "describe_formats", "detect_format",
           "epoch_order", "open_dataset", "require_random_access"]
