"""Promises of the data modules' docstrings that the reader tests do not pin: which dataset format is picked, what
an image folder given to the wrong format gets, and the drawn shapes of the demo and the fine-tuning tests."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ernievil2torch.data.demo import DEMO_CAPTIONS, SHAPE_COLOURS, SHAPES, demo_images, draw_shape
from ernievil2torch.data.formats import detect_format, open_dataset
from ernievil2torch.errors import InputError


@pytest.mark.parametrize("data,images,expected", [
    ("captions.tsv", "imgs", "caption_folder"), ("captions.jsonl", "imgs", "caption_folder"),
    ("captions.jsonl", None, "caption_folder"), ("CAPTIONS.JSONL", None, "caption_folder"),
    ("test.coco_cn.data", None, "coco_cn_tsv"), ("pairs.tsv", None, "coco_cn_tsv")])
def test_the_format_is_caption_folder_with_images_or_for_jsonl_else_coco_cn(data, images, expected):
    assert detect_format(data, images) == expected


def test_an_image_folder_must_match_the_format(tmp_path):
    captions = tmp_path / "c.jsonl"
    captions.write_text('{"image": "a.png", "caption": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"dataset format caption_folder needs an image folder \(--images\)"):
        open_dataset(captions, None, "caption_folder")
    with pytest.raises(InputError, match=r"coco_cn_tsv holds its images: .*\(drop --images\)"):
        open_dataset(tmp_path / "x.tsv", tmp_path, "coco_cn_tsv")
    with pytest.raises(InputError, match="unknown dataset format 'parquet'"):
        open_dataset(captions, tmp_path, "parquet")
    assert len(open_dataset(captions, tmp_path)) == 1


def painted(shape: str, box=(10, 10, 69, 69), size=80) -> np.ndarray:
    image = Image.new("RGB", (size, size), "white")
    draw_shape(ImageDraw.Draw(image), shape, box, (255, 0, 0))
    return np.asarray(image)[:, :, 1] == 0  # True where the shape is


def test_each_shape_fills_its_box_as_named():
    disc, square, triangle, cross = (painted(s) for s in SHAPES)
    assert square[10:70, 10:70].all() and square.sum() == 60 * 60
    assert disc[40, 10] and disc[40, 69] and disc[10, 40] and not disc[11, 11]  # touches the sides, not the corners
    assert triangle[69, 10] and triangle[69, 69] and triangle[11, 39:41].any()  # base at the bottom, apex centred
    assert not triangle[12, 12] and not triangle[12, 67]
    third = 59 // 3
    assert cross[40, 10] and cross[40, 69] and cross[10, 40] and cross[69, 40]  # four arms reach the box's sides
    assert not cross[10 + third - 1, 10 + third - 1] and cross[40, 40]  # the corners stay empty
    assert not (disc[:10].any() or square[:, 70:].any() or triangle[:10].any() or cross[70:].any())
    with pytest.raises(ValueError, match="unknown shape"):
        painted("五角星")


def test_the_demo_images_are_the_captioned_shapes_in_their_colours():
    images = demo_images(120)
    assert len(images) == len(DEMO_CAPTIONS) == 3
    assert all(image.size == (120, 150) for image in images)  # not square: the resize and crop have work
    expected = [SHAPE_COLOURS["红色"], SHAPE_COLOURS["蓝色"], SHAPE_COLOURS["绿色"]]
    for image, caption, colour in zip(images, DEMO_CAPTIONS, expected):
        pixels = np.asarray(image)
        centre = tuple(int(v) for v in pixels[pixels.shape[0] // 2 + 15, pixels.shape[1] // 2])
        assert centre == colour, caption
        assert tuple(pixels[0, 0]) == (255, 255, 255)


def test_text_tables_need_their_columns_and_keep_row_ids(tmp_path):
    """.csv/.tsv: a header row naming ``field`` (and ``id_field`` when given) is required; an empty cell is a failed
    item that keeps its row id."""
    from ernievil2torch.data.inputs import list_texts

    table = tmp_path / "t.csv"
    table.write_text("key,caption\na,一只猫\nb,\nc,一只狗\n", encoding="utf-8")
    items = list_texts(str(table), field="caption", id_field="key")
    assert [(i.id, i.error) for i in items] == [("a", None), ("b", "empty text"), ("c", None)]
    assert [i.id for i in list_texts(str(table), field="caption")] == ["0", "1", "2"]
    with pytest.raises(InputError, match=r"no column 'text' \(columns: \['key', 'caption'\]\)"):
        list_texts(str(table))
    with pytest.raises(InputError, match="no column 'id'"):
        list_texts(str(table), field="caption", id_field="id")
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="no column 'text'"):
        list_texts(str(empty))
