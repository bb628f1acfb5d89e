"""The data layer: the dataset readers (COCO-CN TSV, image folder + captions), the format table and factory, lazy
image reading in any process, and exact restarts of a stream from a recorded position."""
from __future__ import annotations

import base64
import json
import pickle
from typing import Any, Dict, List

import numpy as np
import pytest
from torch.utils.data import DataLoader

from ernievil2torch.data import (DATASET_FORMATS, CaptionFolderReader, CaptionReader, CocoCnTsvReader,
                                 IndexedCaptions, StreamPosition, describe_formats, epoch_order, open_dataset)
from ernievil2torch.errors import InputError
from ernievil2torch.training.data import PairBatches, load_pairs

from captions import eager_coco_cn, write_caption_dataset

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_caption_dataset(tmp_path_factory.mktemp("coco"))


def as_lists(reader: IndexedCaptions) -> Dict[str, List[Any]]:
    return {"texts": list(reader.texts), "text_image": list(reader.text_image),
            "images": [reader.image(j) for j in range(reader.num_images)], "image_ids": list(reader.image_ids)}


# ---- the readers ------------------------------------------------------------------------------------------------
def test_loaders(dataset):
    coco = CocoCnTsvReader(dataset / "test.coco_cn.data")
    assert len(coco.texts) == sum(1 + i % 3 for i in range(8)) and len(coco.images) == 8
    assert sorted(set(coco.image_ids)) == [str(1000 + i) for i in range(8)]
    folder = CaptionFolderReader(dataset / "imgs", dataset / "captions.jsonl")
    folder_tsv = CaptionFolderReader(dataset / "imgs", dataset / "captions.tsv")
    assert folder.texts == folder_tsv.texts and folder.text_image == folder_tsv.text_image
    assert sorted(folder.texts) == sorted(coco.texts)
    assert folder.image(0) == str(dataset / "imgs" / "0.jpg") and folder.images[:2] == [folder.image(0),
                                                                                          folder.image(1)]


def test_coco_cn_reader_equals_the_eager_reference(dataset):
    coco = CocoCnTsvReader(dataset / "test.coco_cn.data")
    assert as_lists(coco) == eager_coco_cn(dataset / "test.coco_cn.data")
    for j in range(coco.num_images):  # the bytes of the image file behind each id
        assert coco.image(j) == (dataset / "imgs" / f"{int(coco.image_ids[j]) - 1000}.jpg").read_bytes()


def test_coco_cn_line_endings_blank_lines_and_two_fields(tmp_path):
    """Lines end at \\n, \\r\\n or a lone \\r (as text files read them); blank lines are skipped but counted; a
    two-field line has the id ``line<N>``; an image repeated with the same id and base64 is one image."""
    b64 = [base64.b64encode(bytes([i]) * (10 + i)).decode() for i in range(3)]
    body = (f"猫\t7\t{b64[0]}\r\n\r\n狗\t{b64[1]}\r鸟\t7\t{b64[0]}\n \n鱼\t7\t{b64[2]}\r\n马\t8\textra\t{b64[2]}")
    path = tmp_path / "mixed.data"
    path.write_bytes(body.encode("utf-8"))
    reader = CocoCnTsvReader(path)
    assert as_lists(reader) == eager_coco_cn(path)
    assert reader.texts == ["猫", "狗", "鸟", "鱼", "马"] and reader.text_image == [0, 1, 0, 2, 3]
    assert reader.image_ids == ["7", "line3", "7", "8"]
    assert reader.image(3) == bytes([2]) * 12


@pytest.mark.parametrize("body, message", [
    ("a\t1\tAAAA\nonly-one-field\n", "line 2: expected 'text<TAB>image_id<TAB>base64', got 1 field"),
    ("a\t1\tAAAA\r\rb\t2\tAAA\n", "line 3: bad base64 image"),
    ("\n\n  \n", "no captions"),
])
def test_coco_cn_errors_name_the_line(tmp_path, body, message):
    path = tmp_path / "bad.data"
    path.write_bytes(body.encode("utf-8"))
    with pytest.raises(InputError, match=message):
        CocoCnTsvReader(path)


def test_caption_folder_errors(tmp_path, dataset):
    images = dataset / "imgs"
    cases = {
        "image folder .* not found": (tmp_path / "nowhere", dataset / "captions.jsonl"),
        "no such file": (images, tmp_path / "absent.jsonl"),
    }
    (tmp_path / "bad.jsonl").write_text('{"image": "0.jpg", "caption": "猫"}\nnot json\n', encoding="utf-8")
    cases["bad.jsonl line 2: bad JSON"] = (images, tmp_path / "bad.jsonl")
    (tmp_path / "nocap.jsonl").write_text('{"image": "0.jpg"}\n', encoding="utf-8")
    cases["line 1: needs 'image' and 'caption' or 'captions'"] = (images, tmp_path / "nocap.jsonl")
    (tmp_path / "short.tsv").write_text("caption\timage\n猫\t0.jpg\n狗\n", encoding="utf-8")
    cases["short.tsv row 2: expected 'caption<TAB>image'"] = (images, tmp_path / "short.tsv")
    (tmp_path / "empty.tsv").write_text("text\timage\n", encoding="utf-8")
    cases["empty.tsv: no captions"] = (images, tmp_path / "empty.tsv")
    for message, (folder, captions) in cases.items():
        with pytest.raises(InputError, match=message):
            CaptionFolderReader(folder, captions)


def test_caption_folder_tsv_header_and_missing_images(tmp_path, dataset):
    (tmp_path / "plain.tsv").write_text("猫\t0.jpg\n狗\tgone.jpg\n鸟\t0.jpg\n", encoding="utf-8")
    reader = CaptionFolderReader(dataset / "imgs", tmp_path / "plain.tsv")
    assert reader.texts == ["猫", "狗", "鸟"] and reader.text_image == [0, 1, 0]
    assert reader.image_ids == ["0.jpg", "gone.jpg"]
    assert reader.missing_images() == [(1, str(dataset / "imgs" / "gone.jpg"))]
    with pytest.raises(InputError, match=r"training data .*1 of 2 images not found .*gone\.jpg"):
        load_pairs(str(tmp_path / "plain.tsv"), str(dataset / "imgs"))


# ---- the format table and the factory ---------------------------------------------------------------------------
def test_format_table_and_factory(dataset, tmp_path):
    assert set(DATASET_FORMATS) == {"coco_cn_tsv", "caption_folder", "webdataset"}
    assert describe_formats().splitlines()[0].startswith("coco_cn_tsv: ")
    tsv, jsonl, imgs = dataset / "test.coco_cn.data", dataset / "captions.jsonl", dataset / "imgs"
    assert isinstance(open_dataset(tsv), CocoCnTsvReader)
    assert isinstance(open_dataset(jsonl, imgs), CaptionFolderReader)
    assert isinstance(open_dataset(jsonl, imgs, format="caption_folder"), CaptionFolderReader)
    assert isinstance(open_dataset(tsv, format="coco_cn_tsv"), CocoCnTsvReader)
    for reader in (open_dataset(tsv), open_dataset(jsonl, imgs)):
        assert isinstance(reader, CaptionReader) and reader.random_access
        assert reader.format in DATASET_FORMATS
    with pytest.raises(InputError, match="unknown dataset format 'wds'; known formats: coco_cn_tsv, caption_folder, "
                                         "webdataset"):
        open_dataset(tsv, format="wds")
    with pytest.raises(InputError, match="caption_folder needs an image folder"):
        open_dataset(jsonl, format="caption_folder")
    with pytest.raises(InputError, match="caption_folder needs an image folder"):  # a .jsonl holds no images
        open_dataset(jsonl)
    with pytest.raises(InputError, match="coco_cn_tsv holds its images"):
        open_dataset(tsv, imgs, format="coco_cn_tsv")
    (tmp_path / "latin1.data").write_bytes("caf\xe9\t1\tAAAA\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.data: not a UTF-8 text file"):
        open_dataset(tmp_path / "latin1.data")
    with pytest.raises(InputError, match="no such file"):
        open_dataset(tmp_path)  # a folder is not a TSV


# ---- images read on demand, in any process ---------------------------------------------------------------------
def test_reader_keeps_no_image_bytes_and_reopens_in_workers(dataset, tmp_path):
    path = dataset / "test.coco_cn.data"
    reader = CocoCnTsvReader(path)
    reader.image(0)  # opens the file in this process
    pickled = pickle.dumps(reader)
    assert len(pickled) < path.stat().st_size / 10  # captions and offsets only
    copy = pickle.loads(pickled)
    assert as_lists(copy) == as_lists(reader)
    loader = DataLoader(reader.image_items(), batch_size=3, num_workers=2, collate_fn=list)
    got = [item for batch in loader for item in batch]
    assert [item.id for item in got] == reader.image_ids
    assert [item.source for item in got] == [reader.image(j) for j in range(reader.num_images)]
    reader.close()


def test_a_changed_file_fails_the_image_not_the_run(dataset, tmp_path):
    path = tmp_path / "changing.data"
    path.write_bytes((dataset / "test.coco_cn.data").read_bytes())
    reader = CocoCnTsvReader(path)
    first = reader.image(0)
    path.write_bytes(b"x" * path.stat().st_size)
    with pytest.raises(InputError, match="changing.data line 1: the file changed since it was read"):
        reader.image(0)
    reader.close()
    item = reader.image_items()[0]
    assert item.source is None and "the file changed" in item.error and first


# ---- stream positions --------------------------------------------------------------------------------------------
def test_stream_position_record():
    position = StreamPosition(2, 17)
    assert StreamPosition.from_dict(json.loads(json.dumps(position.to_dict()))) == position
    assert position.advanced(3) == StreamPosition(2, 20, 0) and StreamPosition() == StreamPosition(0, 0, 0)
    for bad in ({"epoch": -1}, {"index": 1.5}, {"shard": True}, {"epoch": "1"}):
        with pytest.raises(InputError, match="stream position"):
            StreamPosition.from_dict(bad)
    with pytest.raises(InputError, match="stream position"):
        StreamPosition.from_dict({"epoch": 0, "step": 3})


def test_epoch_order_is_the_seeded_permutation():
    for seed, epoch in ((0, 0), (3, 1), (123, 7)):
        assert epoch_order(50, seed, epoch).tolist() == np.random.default_rng([seed, epoch]).permutation(50).tolist()
    assert epoch_order(5, None, 3).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fmt", ["coco_cn_tsv", "caption_folder"])
@pytest.mark.parametrize("seed", [None, 11])
def test_a_restarted_stream_yields_exactly_the_remaining_samples(dataset, fmt, seed):
    reader = (open_dataset(dataset / "test.coco_cn.data") if fmt == "coco_cn_tsv"
              else open_dataset(dataset / "captions.tsv", dataset / "imgs"))
    for epoch in (0, 1):
        full = list(reader.stream(StreamPosition(epoch), seed))
        assert sorted(s.caption for s in full) == list(range(len(reader)))  # every caption once per epoch
        assert [s.position for s in full] == [StreamPosition(epoch, i) for i in range(len(full))]
        for s in full:
            assert (s.text, s.image_id, s.image) == (reader.texts[s.caption], reader.image_ids[s.image],
                                                     reader.text_image[s.caption])
            assert s.source == reader.image(s.image)
        for taken in (0, 1, 7, len(full) - 1, len(full)):
            recorded = full[taken - 1].position.advanced(1).to_dict() if taken else StreamPosition(epoch).to_dict()
            restarted = pickle.loads(pickle.dumps(reader))  # as a new process would see it
            rest = list(restarted.stream(StreamPosition.from_dict(recorded), seed))
            assert rest == full[taken:]
    if seed is not None:
        assert [s.caption for s in reader.stream(StreamPosition(0), seed)] != \
               [s.caption for s in reader.stream(StreamPosition(1), seed)]
    with pytest.raises(InputError, match="one shard only"):
        next(reader.stream(StreamPosition(0, 0, shard=1)))
    with pytest.raises(InputError, match="past the"):
        next(reader.stream(StreamPosition(0, len(reader) + 1)))


def test_pair_batches_positions_are_stream_positions(dataset):
    """A micro-batch's recorded position restarts the pairs' stream at its first pair, for every rank's slice."""
    reader = open_dataset(dataset / "test.coco_cn.data")
    n, batch, world, seed = len(reader), 2, 2, 5
    ranks = [PairBatches(n, batch, world, rank, seed, start=0, count=9) for rank in range(world)]
    per_rank = [list(sampler) for sampler in ranks]
    for micro in range(9):
        position = ranks[0].position(micro)
        assert ranks[1].position(micro) == position
        assert ranks[0].micro_batch_at(StreamPosition.from_dict(position.to_dict())) == micro
        stream = reader.stream(position, seed)
        global_batch = [next(stream) for _ in range(batch * world)]
        for rank in range(world):
            keys = per_rank[rank][micro]
            assert keys == [(position.epoch, s.caption) for s in global_batch[rank * batch:(rank + 1) * batch]]
        resumed = PairBatches(n, batch, world, 0, seed, start=ranks[0].micro_batch_at(position), count=9 - micro)
        assert list(resumed) == per_rank[0][micro:]
    with pytest.raises(InputError, match="not the start of a batch"):
        ranks[0].micro_batch_at(StreamPosition(0, 1))
    with pytest.raises(InputError, match="not the start of a batch"):
        ranks[0].micro_batch_at(StreamPosition(0, ranks[0].per_epoch * batch * world))


def test_not_utf8_wins_over_a_malformed_line(tmp_path):
    """A file that is not UTF-8 is reported as such even when an earlier line is malformed."""
    path = tmp_path / "binary.tsv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UnicodeDecodeError):
        CocoCnTsvReader(path)
    with pytest.raises(InputError, match="training data: .*binary.tsv: not a UTF-8 text file"):
        load_pairs(str(path))
