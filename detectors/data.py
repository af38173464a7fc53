"""Box tables and batches for the clump detectors.

Targets and predictions follow torchvision's detection convention: one dict per image with "boxes" (K, 4) float
xyxy pixel coordinates ((0, 0) is the top-left corner of the image), "labels" (K,) int64 (1 clump, 2 odd clump),
and optionally "scores" (K,) for predictions and "flux_fraction" (K,) for simulated truths.

Tables:
- CSV in the Clump Scout style, one row per box: `image_id,x1,y1,x2,y2,label` (+ optional `score`,
  `flux_fraction` columns). An image without boxes is kept as a row with only its `image_id`.
- COCO JSON (`images`, `annotations` with `bbox` = [x, y, width, height], `categories`); optional per-annotation
  `score` and `flux_fraction`.
Both readers return a `BoxTable(image_ids, targets, image_sizes)`; writers take the same pieces.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from blindspots.errors import InputError
from blindspots.studies.tables import spreadsheet_safe, undo_spreadsheet_safe

__all__ = [
    "BoxTable",
    "check_target",
    "collate",
    "read_boxes_csv",
    "write_boxes_csv",
    "read_coco",
    "write_coco",
    "load_cutouts",
    "CATEGORY_NAMES",
]

# category id -> name (0 is the background, never written)
CATEGORY_NAMES: dict[int, str] = {1: "clump", 2: "odd_clump"}
_CSV_COLUMNS = ("image_id", "x1", "y1", "x2", "y2", "label")
_OPTIONAL = ("score", "flux_fraction")  # CSV column / COCO field name
_TARGET_KEY = {"score": "scores", "flux_fraction": "flux_fraction"}


class BoxTable(NamedTuple):
    """Image ids (strings, in table order), one target dict per image, and (H, W) sizes when the table has them."""

    image_ids: list[str]
    targets: list[dict[str, torch.Tensor]]
    image_sizes: list[tuple[int, int]] | None


def check_target(target: Any, name: str = "target", *, scores: bool = False) -> dict[str, torch.Tensor]:
    """Check one target/prediction dict: boxes (K, 4) finite with x2 >= x1 and y2 >= y1, labels (K,) integers, and
    scores (K,) when `scores` is True (or present). Returns it with float32 boxes/scores and int64 labels."""
    if not isinstance(target, Mapping):
        raise TypeError(f"{name} must be a dict with 'boxes' and 'labels', got {type(target).__name__}")
    if "boxes" not in target:
        raise InputError(f"{name} has no 'boxes' (keys: {sorted(target)})")
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32)
    if boxes.numel() == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"{name}['boxes'] must have shape (K, 4) as x1, y1, x2, y2, got {tuple(boxes.shape)}")
    if not bool(torch.isfinite(boxes).all()):
        raise InputError(f"{name}['boxes'] contains NaN or infinite values")
    if bool((boxes[:, 2] < boxes[:, 0]).any() | (boxes[:, 3] < boxes[:, 1]).any()):
        raise InputError(f"{name}['boxes'] must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1 "
                         "(got width/height boxes? convert with torchvision.ops.box_convert)")
    k = boxes.shape[0]
    out = dict(target)
    out["boxes"] = boxes
    if "labels" in target:
        labels = torch.as_tensor(target["labels"])
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"{name}['labels'] must be integers, got {labels.dtype}")
        if labels.reshape(-1).shape[0] != k:
            raise InputError(f"{name}['labels'] must have one entry per box ({k}), got {tuple(labels.shape)}")
        out["labels"] = labels.reshape(-1).long()
    if scores and "scores" not in target:
        raise InputError(f"{name} has no 'scores' (a prediction needs boxes, scores and labels)")
    for key in ("scores", "flux_fraction"):
        if key in target:
            v = torch.as_tensor(target[key], dtype=torch.float32).reshape(-1)
            if v.shape[0] != k:
                raise InputError(f"{name}['{key}'] must have one entry per box ({k}), got {v.shape[0]}")
            if key == "scores" and not bool(((v >= 0) & (v <= 1)).all()):  # NaN fails both
                bad = v[~((v >= 0) & (v <= 1))][:3].tolist()
                raise InputError(f"{name}['scores'] must be confidences in [0, 1], got {bad}")
            out[key] = v
    return out


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """DataLoader collate for detection: a list of (image, target) pairs -> (list of images, list of targets),
    the input format of torchvision detection models (images may differ in size)."""
    if len(batch) == 0:
        raise InputError("cannot collate an empty batch")
    images, targets = zip(*batch)
    return list(images), list(targets)


# --------------------------------------------------------------------------------------------------- CSV


def _ids(image_ids: Sequence[Any] | None, n: int) -> list[str]:
    if image_ids is None:
        return [str(i) for i in range(n)]
    ids = [str(i) for i in image_ids]
    if len(ids) != n:
        raise InputError(f"got {len(ids)} image ids for {n} targets")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"image ids must be unique, repeated: {dup}")
    return ids


def write_boxes_csv(path: str | os.PathLike, targets: Sequence[Mapping[str, Any]],
                    image_ids: Sequence[Any] | None = None) -> Path:
    """Write targets (or predictions, with a `score` column) as a Clump Scout-style CSV, one row per box.

    `image_ids` default to "0", "1", ...; images without boxes get a row with only their id. Floats are written
    exactly (float32 values round-trip); an id a spreadsheet would run as a formula (=, +, -, @) is written with a
    leading apostrophe, which `read_boxes_csv` removes."""
    ids = _ids(image_ids, len(targets))
    checked = [check_target(t, f"targets[{i}]") for i, t in enumerate(targets)]
    extra = [c for c in _OPTIONAL if any(_TARGET_KEY[c] in t for t in checked)]
    for c in extra:
        missing = [ids[i] for i, t in enumerate(checked) if t["boxes"].shape[0] and _TARGET_KEY[c] not in t]
        if missing:
            raise InputError(f"some targets have '{_TARGET_KEY[c]}' and others not (e.g. image {missing[0]})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(_CSV_COLUMNS) + extra)
        for image_id, t in zip(ids, checked):
            k = t["boxes"].shape[0]
            if k == 0:
                w.writerow([spreadsheet_safe(image_id)] + [""] * (len(_CSV_COLUMNS) - 1 + len(extra)))
                continue
            labels = t.get("labels", torch.ones(k, dtype=torch.int64))
            for j in range(k):
                row = [spreadsheet_safe(image_id)] + [repr(float(v)) for v in t["boxes"][j].tolist()] + [int(labels[j])]
                row += [repr(float(t[_TARGET_KEY[c]][j])) for c in extra]
                w.writerow(row)
    return path


def read_boxes_csv(path: str | os.PathLike) -> BoxTable:
    """Read a box CSV (columns image_id, x1, y1, x2, y2 and optionally label (default 1), score,
    flux_fraction; other columns are ignored). Images keep their order of first appearance."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"box table not found: {path}")
    rows: dict[str, list[dict[str, str]]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _CSV_COLUMNS[:5] if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; expected a header like "
                             f"{','.join(_CSV_COLUMNS)} (found {header})")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            image_id = undo_spreadsheet_safe(row["image_id"])
            if not image_id:
                raise InputError(f"{path}, line {line}: empty image_id")
            rows.setdefault(image_id, [])
            if all(row.get(c, "") == "" for c in _CSV_COLUMNS[1:5]):
                continue  # an image without boxes
            rows[image_id].append(row | {"_line": str(line)})
    targets = []
    for image_id, rs in rows.items():
        try:
            boxes = [[float(r[c]) for c in _CSV_COLUMNS[1:5]] for r in rs]
            labels = [int(r["label"]) if r.get("label", "") != "" else 1 for r in rs]
            t: dict[str, torch.Tensor] = {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
            for c in _OPTIONAL:
                if c in header:
                    t[_TARGET_KEY[c]] = torch.tensor([float(r[c]) for r in rs], dtype=torch.float32)
        except ValueError as exc:
            raise InputError(f"{path}: bad number in the rows of image {image_id!r}: {exc}") from exc
        targets.append(check_target(t, f"{path} image {image_id!r}"))
    return BoxTable(list(rows), targets, None)


# --------------------------------------------------------------------------------------------------- COCO


def write_coco(path: str | os.PathLike, targets: Sequence[Mapping[str, Any]], image_sizes: Sequence[Sequence[int]],
               image_ids: Sequence[Any] | None = None,
               categories: Mapping[int, str] = CATEGORY_NAMES) -> Path:
    """Write targets as a COCO detection JSON. `image_ids` become the images' `file_name` (numeric COCO ids are
    1..N); `image_sizes` are (H, W) per image; boxes become `bbox` = [x, y, width, height]."""
    ids = _ids(image_ids, len(targets))
    if len(image_sizes) != len(targets):
        raise InputError(f"got {len(image_sizes)} image sizes for {len(targets)} targets")
    images, annotations = [], []
    for n, (image_id, t, hw) in enumerate(zip(ids, targets, image_sizes), start=1):
        t = check_target(t, f"targets[{n - 1}]")
        h, w = (int(v) for v in hw)
        images.append({"id": n, "file_name": image_id, "height": h, "width": w})
        boxes = t["boxes"].double()
        labels = t.get("labels", torch.ones(boxes.shape[0], dtype=torch.int64))
        for j in range(boxes.shape[0]):
            x1, y1, x2, y2 = boxes[j].tolist()
            label = int(labels[j])
            if label not in categories:
                raise InputError(f"label {label} of image {image_id!r} is not a category {dict(categories)}")
            ann = {"id": len(annotations) + 1, "image_id": n, "category_id": label,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            for c in _OPTIONAL:
                if _TARGET_KEY[c] in t:
                    ann[c] = float(t[_TARGET_KEY[c]][j])
            annotations.append(ann)
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(categories.items())]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def read_coco(path: str | os.PathLike) -> BoxTable:
    """Read a COCO detection JSON: image ids are the `file_name`s, boxes come back as xyxy, sizes as (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO file not found: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise InputError(f"{path} is not a COCO detection file (needs 'images' and 'annotations')")
    order = {img["id"]: i for i, img in enumerate(doc["images"])}
    per_image: list[list[dict]] = [[] for _ in doc["images"]]
    for ann in doc["annotations"]:
        if ann.get("image_id") not in order:
            raise InputError(f"{path}: annotation {ann.get('id')} refers to unknown image {ann.get('image_id')}")
        per_image[order[ann["image_id"]]].append(ann)
    present = [c for c in _OPTIONAL if any(c in a for a in doc["annotations"])]
    targets = []
    for img, anns in zip(doc["images"], per_image):
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1).float()
        t: dict[str, torch.Tensor] = {"boxes": boxes,
                                      "labels": torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64)}
        for c in present:
            if all(c in a for a in anns):
                t[_TARGET_KEY[c]] = torch.tensor([float(a[c]) for a in anns], dtype=torch.float32)
        targets.append(check_target(t, f"{path} image {img.get('file_name', img['id'])!r}"))
    ids = [str(img.get("file_name", img["id"])) for img in doc["images"]]
    sizes = [(int(img["height"]), int(img["width"])) if "height" in img and "width" in img else None
             for img in doc["images"]]
    return BoxTable(ids, targets, None if any(s is None for s in sizes) else sizes)


# --------------------------------------------------------------------------------------------------- images


def load_cutouts(folder: str | os.PathLike, size: int | None = None, crop_fraction: float = 1.0,
                 limit: int | None = None, preset: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """Galaxy cutouts of a folder (PNG/JPEG/TIFF, and FITS: one band, one file per band, a cube or a
    multi-extension file, stretched with `preset`; read recursively, sorted by name) as a float (N, 3, size, size)
    batch in [0, 1] and their names. Each image is centre-cropped to `crop_fraction` of its shorter side (the paper
    used the central 200 px of 400-px cutouts: 0.5) and resized to `size` (None: keep the cropped size; all must
    then agree). The reader is `detectors.hosts.load_hosts`; use it directly for each host's survey, RA/Dec and
    pixel scale."""
    from .hosts import load_hosts

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    hosts = load_hosts([folder], size, crop_fraction, limit, preset)
    return hosts.images, hosts.names
