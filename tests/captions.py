"""Caption datasets the tests write themselves, and an eager reference reader of the COCO-CN TSV format.

``write_caption_dataset`` draws 8 images with 1-3 Chinese captions each in both dataset formats;
``eager_coco_cn`` reads a TSV the simplest way (every image decoded up front, the file in text mode), as the
reference the streaming reader is compared with.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, Hashable, List

import numpy as np
from PIL import Image

WORDS = list("一二三四五六七八九十猫狗鸟鱼马牛羊红绿蓝的照片只张")


def write_caption_dataset(root: Path) -> Path:
    """8 generated images, 1-3 captions each, as a COCO-CN style TSV (``test.coco_cn.data``, captions of one image
    not adjacent) and as an image folder ``imgs`` with ``captions.jsonl`` and ``captions.tsv`` (image<TAB>caption
    header)."""
    rng = np.random.default_rng(3)
    tsv_lines, jsonl_lines, tsv2 = [], [], ["image\tcaption"]
    (root / "imgs").mkdir()
    for i in range(8):
        arr = rng.integers(0, 256, (int(rng.integers(200, 300)), int(rng.integers(200, 300)), 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG")
        (root / "imgs" / f"{i}.jpg").write_bytes(buf.getvalue())
        b64 = base64.b64encode(buf.getvalue()).decode()
        caps = ["".join(rng.choice(WORDS, int(rng.integers(2, 9)))) for _ in range(1 + i % 3)]
        for c in caps:
            tsv_lines.append(f"{c}\t{1000 + i}\t{b64}")
            tsv2.append(f"{i}.jpg\t{c}")
        jsonl_lines.append(json.dumps({"image": f"{i}.jpg", "captions": caps}, ensure_ascii=False))
    order = rng.permutation(len(tsv_lines))  # captions of one image need not be adjacent
    (root / "test.coco_cn.data").write_text("\n".join(tsv_lines[j] for j in order) + "\n", encoding="utf-8")
    (root / "captions.jsonl").write_text("\n".join(jsonl_lines) + "\n", encoding="utf-8")
    (root / "captions.tsv").write_text("\n".join(tsv2) + "\n", encoding="utf-8")
    return root


# ---- an eager reference: every image decoded up front, the file read in text mode --------------------------
def eager_coco_cn(path: Path) -> Dict[str, List[Any]]:
    texts, links, images, ids, index = [], [], [], [], {}  # type: ignore[var-annotated]
    with open(path, encoding="utf-8") as handle:
        for num, line in enumerate(handle, 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            text, b64 = fields[0], fields[-1]
            image_id = fields[1] if len(fields) >= 3 else f"line{num}"
            key: Hashable = (image_id, hashlib.sha1(b64.encode("ascii", "replace")).hexdigest())
            if key not in index:
                index[key] = len(images)
                images.append(base64.b64decode(b64))
                ids.append(image_id)
            texts.append(text)
            links.append(index[key])
    return {"texts": texts, "text_image": links, "images": images, "image_ids": ids}


#: Captions written the way Chinese image captions are (COCO-CN, product and news photos): full-width punctuation
#: (，。！？：；（）、“”《》), some ASCII digits and Latin words. Used to count what open_clip's text cleaning
#: (ftfy + html.unescape) rewrites before the tokenizer sees it.
REALISTIC_CAPTIONS = [
    "一个穿着红色外套的女人站在街边，手里拿着一把雨伞。",
    "两只猫趴在窗台上晒太阳。",
    "一名男子正在厨房里切菜，旁边放着一锅汤。",
    "桌子上有一个蛋糕，上面插着五根蜡烛！",
    "这是什么鸟？它停在一根树枝上。",
    "一辆公交车停在站台旁，乘客们正在排队上车。",
    "小男孩（大约五岁）在公园里踢足球。",
    "海边的日落：天空被染成了橙色和紫色。",
    "一盘水果：苹果、香蕉、葡萄和橙子。",
    "一位老人坐在长椅上看报纸；身边有一只狗。",
    "“欢迎光临”的招牌挂在商店门口。",
    "一群学生在教室里上课，老师在黑板上写字。",
    "雪后的城市街道，行人很少。",
    "一架飞机正在跑道上起飞。",
    "两个人在网球场上打网球。",
    "一只棕色的狗叼着飞盘跑过草地。",
    "餐厅里摆着几张木桌和椅子，墙上挂着画。",
    "一个女孩在吃冰淇淋，看起来很开心！",
    "厨房里有冰箱、微波炉和水槽。",
    "电脑屏幕上显示着《新闻联播》的画面。",
    "一个人骑着自行车穿过马路……",
    "长颈鹿在动物园里吃树叶。",
    "一碗面条，上面放着鸡蛋和青菜。",
    "三辆摩托车停在路边，旁边是一家咖啡店。",
    "一个穿西装的男人在打电话。",
    "床上放着一只泰迪熊和两个枕头。",
    "这张照片拍的是北京的故宫。",
    "一名滑雪者从山坡上滑下来！！",
    "夜晚的城市，高楼大厦灯火通明。",
    "超市货架上摆满了饮料（可乐、雪碧等）。",
    "一只小鸟站在电线上。",
    "一个厨师正在做披萨，面团放在案板上。",
    "2019年的马拉松比赛，选手们正在跑步。",
    "一个iPhone手机放在桌子上，屏幕是黑的。",
    "妈妈和孩子在沙滩上堆沙堡。",
    "路牌上写着：“前方施工，请绕行”。",
    "一匹白马在田野里吃草。",
    "两位女士在商场里购物，手里提着购物袋。",
    "浴室里有一个浴缸和一面镜子。",
    "一个男孩在放风筝，风筝飞得很高。",
]
