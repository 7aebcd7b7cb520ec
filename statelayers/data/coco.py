"""COCO-format detection data: a dataset giving torchvision's target dicts, a list collate, the folder layout
the engine reads, and a builder of a small real-image COCO set (Fashion-MNIST items pasted onto canvases).

Folder layout for ``--data PATH`` (``find_coco_split`` resolves it)::

    PATH/annotations/instances_train.json   (or instances_train2017.json, as COCO itself)
    PATH/annotations/instances_val.json     (or instances_val2017.json)
    PATH/images/<file_name>                 or PATH/train2017/, PATH/val2017/ (COCO), PATH/train/, PATH/val/,
                                            PATH/images/train/, PATH/images/val/

Each annotation file is standard COCO: ``images`` (id, file_name, width, height), ``annotations`` (image_id,
category_id, bbox [x, y, w, h], segmentation as polygons or RLE, area, iscrowd) and ``categories``.
Category ids are mapped to contiguous labels 1..K (0 is the background), so detectors get num_classes K + 1.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._extras import require

__all__ = [
    "CocoDetectionDataset",
    "CocoSplit",
    "detection_collate",
    "find_coco_split",
    "is_coco_folder",
    "make_fashion_coco",
    "needs_masks",
]

_ANN_NAMES = ("instances_{split}.json", "instances_{split}2017.json")
_IMAGE_DIRS = ("{split}2017", "{split}", "images/{split}", "images")


def _load_coco(ann_file: Path):
    coco_mod = require("pycocotools.coco", "COCO-format detection data")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        return coco_mod.COCO(str(ann_file))


@dataclass(frozen=True)
class CocoSplit:
    ann_file: Path
    image_dir: Path


def needs_masks(detector: str) -> bool:
    """Does the detector train on instance masks?"""
    return str(detector).strip().lower().replace("-", "_") == "mask_rcnn"


def is_coco_folder(path: str | Path) -> bool:
    """Does ``path`` look like a COCO-format folder (``annotations/instances_train*.json``)?"""
    p = Path(path)
    return (p / "annotations").is_dir() and any((p / "annotations").glob("instances_train*.json"))


def find_coco_split(root: str | Path, split: str) -> CocoSplit:
    """The annotation file and image folder of ``split`` ("train" | "val") under ``root`` (layout above)."""
    root = Path(root)
    layout = ("expected PATH/annotations/instances_{train,val}.json (or instances_{train,val}2017.json) and the "
              "images in PATH/images/, PATH/{train,val}2017/ or PATH/{train,val}/")
    ann = next((root / "annotations" / n.format(split=split) for n in _ANN_NAMES
                if (root / "annotations" / n.format(split=split)).is_file()), None)
    if ann is None:
        raise FileNotFoundError(f"no {split} annotations under {root}: {layout}")
    with open(ann) as f:
        images = json.load(f).get("images") or []
    first = images[0]["file_name"] if images else None
    for d in _IMAGE_DIRS:
        folder = root / d.format(split=split)
        if folder.is_dir() and (first is None or (folder / first).is_file()):
            return CocoSplit(ann, folder)
    raise FileNotFoundError(f"the images of {ann} (e.g. {first}) are in none of "
                            f"{', '.join(d.format(split=split) for d in _IMAGE_DIRS)} under {root}: {layout}")


class CocoDetectionDataset(Dataset):
    """COCO-format images and annotations as torchvision detection samples.

    ``ds[i]`` is ``(image, target)``: a float32 RGB tensor (3, H, W) in [0, 1] and a dict with ``boxes``
    (float32 (N, 4), x1 y1 x2 y2 in pixels), ``labels`` (int64 (N,), 1..K), ``image_id`` (int64 scalar), and
    ``masks`` (uint8 (N, H, W), from polygons or RLE through pycocotools) when ``with_masks``. Crowd
    annotations and boxes without area are left out (they are still in the COCO ground truth that
    evaluation uses). ``hflip`` is the probability of a horizontal flip (image, boxes and masks), drawn from
    torch's global generator, which the engine seeds per (seed, epoch, sample).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path, *, with_masks: bool = False, hflip: float = 0.0,
                 ids: list[int] | None = None):
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        self.coco = _load_coco(self.ann_file)
        self.ids = sorted(self.coco.imgs) if ids is None else list(ids)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat = {i + 1: c for i, c in enumerate(self.cat_ids)}
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.with_masks, self.hflip = with_masks, float(hflip)

    @property
    def num_classes(self) -> int:
        """Categories + the background."""
        return len(self.cat_ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        from PIL import Image

        info = self.coco.imgs[image_id]
        with Image.open(self.image_dir / info["file_name"]) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        img = self.load_image(image_id)
        h, w = img.shape[-2:]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)
            if x2 <= x1 or y2 <= y1 or a["category_id"] not in self.cat_to_label:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.cat_to_label[a["category_id"]])
            if self.with_masks:
                masks.append(self.coco.annToMask(a))
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
        }
        if self.with_masks:
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks
                               else torch.zeros((0, h, w), dtype=torch.uint8))
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            img = img.flip(-1)
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
            if self.with_masks:
                target["masks"] = target["masks"].flip(-1)
        return img, target


def detection_collate(batch):
    """[(image, target), ...] -> ({"images": [...], "targets": [...]}, image ids (int64 tensor)).

    The first element goes to the model as keyword arguments (``model(images=..., targets=...)``); the
    second is what the engine counts and what evaluation matches predictions to."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    ids = torch.stack([t["image_id"] for t in targets]) if targets else torch.zeros(0, dtype=torch.int64)
    return {"images": images, "targets": targets}, ids


def build_detection_datasets(data: str | Path, *, with_masks: bool, train_aug: dict | None, subset: int | None,
                             seed: int):
    """(train set, eval set, DataInfo) from a COCO-format folder (layout in the module docstring)."""
    from .images import DataInfo

    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"detection data {data!r} is not a folder (expected a COCO-format folder: "
                                "PATH/annotations/instances_{train,val}.json and PATH/images/; "
                                "`statelayers make-coco-demo PATH` writes a small one)")
    tr, va = find_coco_split(root, "train"), find_coco_split(root, "val")
    hflip = float((train_aug or {}).get("hflip", 0.0))
    train_ds = CocoDetectionDataset(tr.ann_file, tr.image_dir, with_masks=with_masks, hflip=hflip)
    eval_ds = CocoDetectionDataset(va.ann_file, va.image_dir, with_masks=False)
    if train_ds.cat_ids != eval_ds.cat_ids:
        raise ValueError(f"{tr.ann_file} and {va.ann_file} have different categories")
    if subset is not None and subset < len(train_ds):
        g = torch.Generator().manual_seed(int(seed))
        keep = sorted(torch.randperm(len(train_ds), generator=g)[:subset].tolist())
        train_ds.ids = [train_ds.ids[i] for i in keep]
    info = DataInfo(name=root.resolve().name or "coco", num_classes=train_ds.num_classes, in_chans=3, img_size=0,
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classes=train_ds.classes, train_size=len(train_ds),
                    eval_size=len(eval_ds))
    return train_ds, eval_ds, info


# ---------------------------------------------------------------------------------------------
# a small COCO-format set from real images


def _item_source(source: str):
    """(train items, test items, class names): uint8 (N, 28, 28) gray images with black backgrounds."""
    from .images import FASHION_MNIST_CLASSES, DatasetMissing, load_digits, load_fashion_mnist

    if source in ("auto", "fashion_mnist"):
        try:
            xtr, ytr, xte, yte = load_fashion_mnist()
            return (xtr.numpy(), ytr.numpy()), (xte.numpy(), yte.numpy()), list(FASHION_MNIST_CLASSES), "fashion_mnist"
        except DatasetMissing:
            if source == "fashion_mnist":
                raise
    elif source != "digits":
        raise ValueError(f"source must be 'auto', 'fashion_mnist' or 'digits', got {source!r}")
    from PIL import Image

    x, y = load_digits()  # 8x8 in 0..255: upscale to 28x28 like the Fashion-MNIST items
    big = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in x.numpy()])
    n = len(big)
    cut = (4 * n) // 5
    return (big[:cut], y.numpy()[:cut]), (big[cut:], y.numpy()[cut:]), [str(i) for i in range(10)], "digits"


def _paste_canvas(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray, canvas: tuple[int, int],
                  per_image: tuple[int, int], scale: tuple[float, float], threshold: int):
    """One canvas with non-overlapping items; returns (image uint8 (H, W), [(label, mask bool (H, W))])."""
    from PIL import Image

    h, w = canvas
    img = np.zeros((h, w), dtype=np.uint8)
    taken = np.zeros((h, w), dtype=bool)
    objects = []
    for _ in range(int(rng.integers(per_image[0], per_image[1] + 1))):
        k = int(rng.integers(len(items)))
        side = max(8, round(28 * float(rng.uniform(*scale))))
        patch = np.asarray(Image.fromarray(items[k]).resize((side, side), Image.BILINEAR))
        keep = patch > threshold
        if keep.sum() < 16:
            continue
        rows, cols = np.nonzero(keep)
        patch, keep = patch[rows.min():rows.max() + 1, cols.min():cols.max() + 1], keep[rows.min():rows.max() + 1,
                                                                                        cols.min():cols.max() + 1]
        ph, pw = keep.shape
        if ph > h or pw > w:
            continue
        for _try in range(30):  # a free spot with a 2-px margin, or skip the item
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if not taken[max(0, y0 - 2):y0 + ph + 2, max(0, x0 - 2):x0 + pw + 2].any():
                break
        else:
            continue
        taken[y0:y0 + ph, x0:x0 + pw] = True
        region = img[y0:y0 + ph, x0:x0 + pw]
        region[keep] = patch[keep]
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y0 + ph, x0:x0 + pw] = keep
        objects.append((int(labels[k]), mask))
    return img, objects


def make_fashion_coco(root: str | Path, n_images: int = 64, *, n_val: int | None = None, canvas: int = 128,
                      per_image: tuple[int, int] = (1, 4), scale: tuple[float, float] = (1.0, 2.0), seed: int = 0,
                      source: str = "auto", threshold: int = 24) -> Path:
    """Write a small COCO-format detection / instance-segmentation set made of real images.

    Fashion-MNIST items (``source="fashion_mnist"``; Debian's dataset-fashion-mnist) or scikit-learn digits
    upscaled to 28 px (``"digits"``, always available; ``"auto"`` takes Fashion-MNIST when installed) are
    scaled by a random factor in ``scale``, cut to their pixels above ``threshold`` and pasted without overlap
    onto black ``canvas`` x ``canvas`` images, ``per_image`` items each (training images from the items'
    training split, validation images from their test split). Writes ``root/images/{train,val}_NNNNNN.png``
    and ``root/annotations/instances_{train,val}.json`` with the categories, tight boxes, RLE masks exactly
    equal to the pasted pixels (every nonzero pixel belongs to exactly one object), areas and iscrowd 0.
    ``n_images`` training images, ``n_val`` (default ``max(4, n_images // 4)``) validation images.
    Returns ``root``.
    """
    from PIL import Image

    mask_utils = require("pycocotools.mask", "make_fashion_coco")
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    n_val = max(4, n_images // 4) if n_val is None else int(n_val)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    train_items, test_items, names, used = _item_source(source)
    categories = [{"id": i + 1, "name": n, "supercategory": used} for i, n in enumerate(names)]
    rng = np.random.default_rng(seed)
    ann_id = 1
    for split, count, (items, labels) in (("train", n_images, train_items), ("val", n_val, test_items)):
        images, annotations = [], []
        for j in range(count):
            img, objects = _paste_canvas(rng, items, labels, (canvas, canvas), per_image, scale, threshold)
            image_id = j + 1
            file_name = f"{split}_{j:06d}.png"
            Image.fromarray(img).save(root / "images" / file_name)
            images.append({"id": image_id, "file_name": file_name, "width": canvas, "height": canvas})
            for label, mask in objects:
                rows, cols = np.nonzero(mask)
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                x0, y0 = int(cols.min()), int(rows.min())
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": label + 1, "iscrowd": 0,
                    "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
                    "area": int(mask.sum()), "segmentation": rle,
                })
                ann_id += 1
        doc = {"info": {"description": f"statelayers make_fashion_coco: {used} items on {canvas}px canvases",
                        "seed": seed}, "images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root
