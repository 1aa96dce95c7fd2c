"""Multi-label catalogs from detection annotations: COCO instances JSON or Pascal VOC XML -> one label set per image.

Each image's label set is the set of categories of its objects (the multi-label COCO and VOC 2007 benchmarks of
ML-GCN, https://arxiv.org/abs/1904.03582, and mmpretrain's ``VOC`` dataset). Release layouts read (the first
that matches ``SOURCE``):

- COCO (official): ``annotations/instances_<split>.json`` (``instances_train2017.json``), images in ``<split>/``;
- COCO (Roboflow export): ``<split>/_annotations.coco.json`` (``train``, ``valid``, ``test``), images beside it;
- COCO (one file): a ``*.json`` directly in ``SOURCE`` (coco128's ``instances_coco128.json``);
- Pascal VOC: ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg`` in ``SOURCE`` or its one subfolder
  (``bccd/BCCD/``), splits from ``ImageSets/Main/{train,val,test}.txt``.

A COCO image file is looked up as ``file_name`` relative to the JSON's folder, ``SOURCE``, ``SOURCE/<split>/``,
``SOURCE/images/<split>/`` and ``SOURCE/images/`` (in that order), and, for a JSON in an ``annotations/``
folder, ``<release>/<split>/`` and ``<release>/images/<split>/`` (``<release>`` the folder above
``annotations/``, ``<split>`` the JSON's name after ``instances_``). ``splits={"train": "a.json", "val": ...}``
(paths relative to ``SOURCE``; ``.txt`` files are VOC image sets) overrides the detection.

**Split files** (COCO only; ``prepare_data.py multilabel --split-file``, :func:`read_annotation_split_file`):
a split may list several annotation files, and a file may give a part of its images, so that one catalog
draws on several releases (``configs/multi_label/coco_split.yaml``: coco128 + coco_mini's train2017 for
``train``, coco_mini's val2017 cut in two for ``val`` and ``test``)::

    dataset: coco_ml                       # catalog.json's "dataset" (optional)
    train:
      - coco128/instances_coco128.json     # paths relative to SOURCE
      - coco_mini/annotations/instances_train2017.json
    val:
      - {file: coco_mini/annotations/instances_val2017.json, part: 1/2}
    test:
      - {file: coco_mini/annotations/instances_val2017.json, part: 2/2}

``part: k/n`` is the ``k``-th of ``n`` contiguous, nearly equal parts of the file's images sorted by image id
(numerically when every id is a number): a deterministic cut that any machine repeats.

**One photo, once.** An image is identified by its id and its file's name: COCO's ids are global and its file
names are the zero-padded id, so coco128 and coco_mini (both drawn from COCO 2017) name a shared photo alike;
Roboflow exports restart their ids in every file but not their file names. An image listed by two files of one
split is kept once (the first file's; ``duplicates_dropped`` counts the others); an image in two splits is an
error (the catalog would test on training images).

**Split names.** From the file (COCO: the name after ``instances_``; Roboflow: the folder; VOC: the image set)
with a trailing year dropped and ``valid``/``validation`` read as ``val``: ``train2017`` -> ``train``. A single
annotation file whose name says no split (``instances_coco128.json``) gives the split ``train``. VOC without
``ImageSets/Main/{train,val,test}.txt`` puts every ``Annotations/*.xml`` into ``train``; ``trainval.txt`` is
not read (it is train + val).

**Classes.** One class list for every split, indexed ``0..C-1``: COCO's categories sorted by category id
(every category of the JSON, also those without an object in these images: coco128 has 71 of COCO's 80);
VOC's object names, sorted (for VOC 2007 this is mmpretrain's class order). Roboflow's placeholder category
(``supercategory: "none"``, used by no annotation, its name the supercategory of the others) is left out.
Splits' JSON files must agree on the name of each category id.

**Objects counted.** COCO: every annotation, crowd ones (``iscrowd: 1``) included (a crowd region holds
objects of its class). VOC: an object marked ``<difficult>1</difficult>`` does not make its class a label;
a class present *only* as difficult objects of an image goes to ``difficult_labels`` (mmpretrain's
``gt_label_difficult``), which :class:`fewray.evaluation.multi_label.MultiLabelEvaluator` ignores by default
(``difficult_as_positive=None``).

**Images without objects** (coco128 has 2) are kept with empty label sets (``labels == []``): a multi-label
model must learn to say "none of these"; ``drop_empty=True`` leaves them out. ``catalog.json`` counts them.

**Schema** (one Parquet table per split; unlike the few-shot catalogs there is **no** ``label`` column, so the
few-shot readers (``load_split``, ``read_labels``) refuse a multi-label catalog with "has no column 'label' ...:
ROOT is a multi-label catalog" instead of reading one class per image):

- ``image`` (binary): the ``image_size x image_size`` RGB image, PNG (default) or JPEG bytes;
- ``labels`` (list<int32>): sorted class indices ``0..C-1`` of the image's objects (may be empty);
- ``label_names`` (list<string>): their names (``catalog.json["classes"][i]``);
- ``difficult_labels`` (list<int32>): classes present only as difficult objects (VOC; empty for COCO);
- ``image_id`` (string): the COCO image id (decimal) or the VOC file id;
- ``file_name`` (string): the image file, relative to ``SOURCE``.

The ``multi_label`` training task reads it with :func:`fewray.data.multi_label.load_multi_label_split`
(images and a multi-hot target matrix).

``catalog.json``: ``dataset``, ``task: "multi_label"``, ``format`` (``coco``/``voc``), ``classes``,
``num_classes``, ``category_ids`` (COCO), ``image_size``, ``channels`` (3), ``resize_mode``, ``image_format``,
and per split ``images``, ``images_without_objects``, ``dropped_without_objects``, ``positives_per_class``, and,
from a split file, ``files`` (``FILE`` or ``FILE part k/n``, relative to ``SOURCE``) and ``duplicates_dropped``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fewray.data.sources._common import (
    check_image_options,
    check_output_dir,
    encode_image,
    open_image,
    publish_atomically,
    require_dir,
    resize_image,
    write_catalog_info,
)
from fewray.core.errors import DataError

ROBOFLOW_FILE = "_annotations.coco.json"
#: Parquet schema of a multi-label split
SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("labels", pa.list_(pa.int32())),
    ("label_names", pa.list_(pa.string())),
    ("difficult_labels", pa.list_(pa.int32())),
    ("image_id", pa.string()),
    ("file_name", pa.string()),
])


@dataclass
class _Item:
    """One image: where it is and the class indices of its objects."""

    path: Path
    image_id: str
    file_name: str
    labels: set[int] = field(default_factory=set)
    difficult: set[int] = field(default_factory=set)


def split_name(name: str) -> str:
    """The catalog split of an annotation file or folder name: ``train2017`` -> ``train``, ``valid`` -> ``val``.

    Example::

        >>> [split_name(n) for n in ("instances_train2017", "valid", "val2014", "test", "coco128")]
        ['train', 'val', 'val', 'test', 'coco128']
    """
    base = re.sub(r"^instances_", "", name.lower())
    base = re.sub(r"[_-]?\d{4}$", "", base)
    return {"valid": "val", "validation": "val"}.get(base, base) or name


def _one_split(found: dict[str, list[Path]]) -> dict[str, Path]:
    """``{split: file}`` of the found files, checking that no split has two; one unnamed file -> ``train``."""
    if len(found) == 1 and sum(len(v) for v in found.values()) == 1:
        (name, (path,)), = found.items()
        return {name if name in ("train", "val", "test") else "train": path}
    for name, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"two annotation files for split '{name}': {paths[0]} and {paths[1]} "
                            f"(choose with splits={{'{name}': FILE}})")
    return {name: paths[0] for name, paths in sorted(found.items())}


#: a part of an annotation file's images: ``(k, n)``, the ``k``-th (1-based) of ``n`` parts
Part = tuple[int, int]


def parse_part(value: Any, where: str) -> Part:
    """``"k/n"`` (or ``[k, n]``) -> ``(k, n)``: the ``k``-th of ``n`` parts of a file's images (``1 <= k <= n``).

    Raises:
        DataError: anything else, naming ``where``.

    Example::

        >>> parse_part("1/2", "split 'val'"), parse_part([2, 2], "split 'test'")
        ((1, 2), (2, 2))
    """
    parts = value.split("/") if isinstance(value, str) else value
    try:
        k, n = (int(str(x).strip()) for x in parts)
    except (TypeError, ValueError):
        k = n = 0
    if not 1 <= k <= n:
        raise DataError(f"{where}: part must be 'k/n' with 1 <= k <= n (the k-th of n parts of the file's images "
                        f"sorted by image id), got {value!r}")
    return k, n


def split_entries(splits: dict[str, Any]) -> dict[str, list[tuple[str, Part | None]]]:
    """``{split: [(annotation file, part or None), ...]}`` from the ``splits`` argument of
    :func:`prepare_multilabel`: per split a file, or a list of files and ``{file: FILE, part: "k/n"}`` entries
    (or of ``(file, part)`` pairs, this function's own output).

    Raises:
        DataError: a split with no file, an entry that is neither a path nor ``{file, part}``, a bad part.

    Example::

        >>> split_entries({"train": "a.json", "val": [{"file": "b.json", "part": "1/2"}]})
        {'train': [('a.json', None)], 'val': [('b.json', (1, 2))]}
    """
    if not isinstance(splits, dict) or not splits:
        raise DataError(f"splits must map split names to annotation files, got {splits!r:.80}")
    out: dict[str, list[tuple[str, Part | None]]] = {}
    for name, value in splits.items():
        where = f"split '{name}'"
        entries = value if isinstance(value, list) else [value]
        if not entries:
            raise DataError(f"{where} lists no annotation file")
        out[str(name)] = []
        for entry in entries:
            if isinstance(entry, (str, Path)) and str(entry):
                out[str(name)].append((str(entry), None))
            elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], (str, Path)):  # normalised
                out[str(name)].append((str(entry[0]), None if entry[1] is None else parse_part(entry[1], where)))
            elif isinstance(entry, dict) and isinstance(entry.get("file"), str) and set(entry) <= {"file", "part"}:
                part = parse_part(entry["part"], where) if "part" in entry else None
                out[str(name)].append((entry["file"], part))
            else:
                raise DataError(f"{where}: expected an annotation file or {{file: FILE, part: k/n}}, got {entry!r:.80}")
    return out


def read_annotation_split_file(path: str | Path) -> tuple[dict[str, list[tuple[str, Part | None]]], str | None]:
    """A multi-label split file (YAML or JSON; module docstring): ``(split entries, dataset name or None)``.

    Raises:
        DataError: a missing or unparsable file, a top level that is not a mapping, a ``dataset`` that is not a
            string, or :func:`split_entries`' errors.

    Example::

        >>> entries, name = read_annotation_split_file("configs/multi_label/coco_split.yaml")
        >>> name, sorted(entries), entries["test"]
        ('coco_ml', ['test', 'train', 'val'], [('coco_mini/annotations/instances_val2017.json', (2, 2))])
    """
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse split file {path}: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(raw, dict):
        raise DataError(f"split file {path}: expected a mapping of split name to annotation files")
    dataset = raw.pop("dataset", None)
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        raise DataError(f"split file {path}: dataset must be a name, got {dataset!r}")
    try:
        return split_entries(raw), dataset
    except DataError as exc:
        raise DataError(f"split file {path}: {exc}") from None


def select_part(items: list[_Item], part: Part) -> list[_Item]:
    """Part ``k`` of ``n`` of ``items`` sorted by image id (numerically when every id is a number): contiguous,
    nearly equal parts (sizes differ by at most one).

    Example::

        >>> items = [_Item(Path(f"{i}.jpg"), str(i), f"{i}.jpg") for i in (30, 4, 100, 7, 5)]
        >>> [it.image_id for it in select_part(items, (1, 2))], [it.image_id for it in select_part(items, (2, 2))]
        (['4', '5'], ['7', '30', '100'])
    """
    k, n = part
    numeric = all(it.image_id.isdigit() for it in items)
    ordered = sorted(items, key=lambda it: (int(it.image_id), it.image_id) if numeric else (0, it.image_id))
    bounds = [round(i * len(ordered) / n) for i in range(n + 1)]
    return ordered[bounds[k - 1]:bounds[k]]


def _voc_root(source: Path) -> Path | None:
    """``source`` or its one subfolder holding ``Annotations/`` (a VOC release), else None."""
    if (source / "Annotations").is_dir():
        return source
    roots = sorted(d for d in source.iterdir() if d.is_dir() and (d / "Annotations").is_dir())
    if len(roots) > 1:
        raise DataError(f"{source} holds several VOC releases ({', '.join(r.name for r in roots)}): "
                        f"give one of them as the source")
    return roots[0] if roots else None


def find_annotations(source: Path, splits: dict[str, str] | None = None) -> tuple[str, dict[str, Path], Path]:
    """The annotation files of a release: ``(format, {split: file}, root)``.

    ``format`` is ``"coco"`` (files are JSON) or ``"voc"`` (files are image-set ``.txt`` lists, or
    ``root/Annotations`` itself when there are none); ``root`` is the VOC root or ``source``.

    Raises:
        DataError: an annotation file of ``splits`` that does not exist; no annotations found; COCO and VOC
            annotations both present; two files for one split.
    """
    voc = _voc_root(source)
    if splits:
        files = {}
        for name, rel in splits.items():
            path = Path(rel) if Path(rel).is_absolute() else source / rel
            if not path.is_file():
                raise DataError(f"annotation file not found: {path} (split '{name}')")
            files[name] = path
        kinds = {p.suffix.lower() == ".json" for p in files.values()}
        if kinds == {True}:
            return "coco", files, source
        if kinds == {False} and voc is not None:
            return "voc", files, voc
        raise DataError(f"splits must all be COCO .json files, or VOC image sets (.txt) beside "
                        f"{source}/**/Annotations; got {', '.join(str(p) for p in files.values())}")
    found: dict[str, list[Path]] = {}
    if (source / "annotations").is_dir():
        for p in sorted((source / "annotations").glob("instances_*.json")):
            found.setdefault(split_name(p.stem), []).append(p)
    if not found:
        for p in sorted(source.glob(f"*/{ROBOFLOW_FILE}")):
            found.setdefault(split_name(p.parent.name), []).append(p)
        if (source / ROBOFLOW_FILE).is_file():
            found.setdefault("train", []).append(source / ROBOFLOW_FILE)
    if not found:
        for p in sorted(source.glob("*.json")):
            found.setdefault(split_name(p.stem), []).append(p)
    if found and voc is not None:
        raise DataError(f"{source} holds both COCO ({next(iter(found.values()))[0].name}) and VOC "
                        f"({voc / 'Annotations'}) annotations: give splits= or a folder with one of them")
    if found:
        return "coco", _one_split(found), source
    if voc is None:
        raise DataError(f"no COCO or VOC annotations in {source} (expected annotations/instances_<split>.json, "
                        f"<split>/{ROBOFLOW_FILE}, a *.json file, or Annotations/*.xml)")
    sets = {s: voc / "ImageSets" / "Main" / f"{s}.txt" for s in ("train", "val", "test")}
    sets = {s: p for s, p in sets.items() if p.is_file()}
    return "voc", sets or {"train": voc / "Annotations"}, voc


# ----------------------------------------------------------------------------------------------------- COCO

def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file {path} is not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"annotation file {path} is not a COCO instances file (no 'images' list)")
    return data


def _coco_categories(path: Path, data: dict) -> dict[int, str]:
    """``{category id: name}`` of a COCO file, without Roboflow's unused placeholder category."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(f"annotation file {path} has no categories: a multi-label catalog needs labels")
    out: dict[int, str] = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise DataError(f"annotation file {path}: category #{i} needs an integer 'id' and a string 'name', "
                            f"got {c!r:.80}")
        if c["id"] in out:
            raise DataError(f"annotation file {path}: category id {c['id']} appears twice")
        out[c["id"]] = c["name"]
    used = {a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict)}
    supers = {c.get("supercategory") for c in cats}
    for c in cats:
        if c.get("supercategory") == "none" and c["id"] not in used and c["name"] in supers and len(cats) > 1:
            del out[c["id"]]  # Roboflow's dataset-name placeholder
    return out


def _coco_image_dirs(path: Path, source: Path) -> list[Path]:
    stem = re.sub(r"^instances_", "", path.stem)
    dirs = [path.parent, source, source / stem, source / "images" / stem, source / "images"]
    if path.parent.name == "annotations":  # the official layout, inside SOURCE (a split file naming its JSON)
        dirs += [path.parent.parent / stem, path.parent.parent / "images" / stem]
    return list(dict.fromkeys(dirs))


def read_coco(path: Path, data: dict, source: Path, categories: dict[int, int]) -> list[_Item]:
    """The images of a COCO instances file (``data``: its parsed JSON) with the class indices
    (``categories``: category id -> index) of their objects.

    Raises:
        DataError: no annotations, an annotation of an unknown category or image, an image entry without
            ``id``/``file_name``, a duplicate image id, or an image file that is in none of the looked-up folders.
    """
    anns = data.get("annotations")
    if not isinstance(anns, list) or not anns:
        raise DataError(f"annotation file {path} has no annotations: a multi-label catalog needs labels")
    own = _coco_categories(path, data)
    dirs = _coco_image_dirs(path, source)
    items: dict[Any, _Item] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"annotation file {path}: image #{i} needs an 'id' and a 'file_name', got {im!r:.80}")
        if im["id"] in items:
            raise DataError(f"annotation file {path}: image id {im['id']} appears twice")
        found = next((d / im["file_name"] for d in dirs if (d / im["file_name"]).is_file()), None)
        if found is None:
            raise DataError(f"image file not found: {im['file_name']} of {path.name} (looked in "
                            f"{', '.join(str(d) for d in dirs)})")
        items[im["id"]] = _Item(found, str(im["id"]), _relative(found, source))
    for a in anns:
        cid, iid = (a.get("category_id"), a.get("image_id")) if isinstance(a, dict) else (None, None)
        if cid not in own:
            raise DataError(f"annotation file {path}: annotation {a.get('id') if isinstance(a, dict) else a!r:.60} "
                            f"has category_id {cid!r}, which is not among its categories")
        if iid not in items:
            raise DataError(f"annotation file {path}: annotation {a.get('id')} refers to image_id {iid!r}, "
                            f"which is not among its images")
        items[iid].labels.add(categories[cid])
    return list(items.values())


# ------------------------------------------------------------------------------------------------------ VOC

def _voc_objects(xml: Path) -> tuple[list[tuple[str, bool]], str | None]:
    """``([(name, difficult), ...], <filename>)`` of one VOC annotation file."""
    if not xml.is_file():
        raise DataError(f"annotation file not found: {xml}")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise DataError(f"annotation file {xml} is not valid XML ({exc})") from None
    objects = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"annotation file {xml}: object #{k} has no <name>")
        objects.append((name, (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")))
    return objects, (root.findtext("filename") or "").strip() or None


def _voc_ids(listing: Path) -> list[str]:
    """Image ids of a VOC image set (first word of each line), or the stems of ``Annotations/*.xml``."""
    if listing.is_dir():
        ids = sorted(p.stem for p in listing.glob("*.xml"))
        if not ids:
            raise DataError(f"no annotation files (*.xml) in {listing}")
        return ids
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"image set {listing} lists no images")
    return ids


def read_voc(root: Path, sets: dict[str, Path], source: Path) -> tuple[list[str], dict[str, list[_Item]]]:
    """``(classes, {split: items})`` of a VOC release; classes are the sorted object names of every split.

    Raises:
        DataError: a listed image whose XML or JPEG is missing, invalid XML, an object without a name, or no
            object in any annotation file.
    """
    raw: dict[str, list[tuple[Path, str, list[tuple[str, bool]]]]] = {}
    for split, listing in sets.items():
        rows = raw.setdefault(split, [])
        for image_id in _voc_ids(listing):
            objects, filename = _voc_objects(root / "Annotations" / f"{image_id}.xml")
            candidates = [root / "JPEGImages" / name for name in (f"{image_id}.jpg", filename) if name]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                xml = root / "Annotations" / f"{image_id}.xml"
                raise DataError(f"image file not found: {candidates[0]} (annotation {xml})")
            rows.append((path, image_id, objects))
    classes = sorted({name for rows in raw.values() for _, _, objs in rows for name, _ in objs})
    if not classes:
        raise DataError(f"the VOC annotations in {root / 'Annotations'} name no objects: "
                        f"a multi-label catalog needs labels")
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[_Item]] = {}
    for split, rows in raw.items():
        out[split] = []
        for path, image_id, objs in rows:
            item = _Item(path, image_id, _relative(path, source))
            item.labels = {index[n] for n, difficult in objs if not difficult}
            item.difficult = {index[n] for n, difficult in objs if difficult} - item.labels
            out[split].append(item)
    return classes, out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------- writer

def prepare_multilabel(
    source: str | Path,
    out: str | Path,
    image_size: int = 224,
    resize_mode: str = "stretch",
    image_format: str = "png",
    progress: Callable[[int], None] | None = None,
    splits: dict[str, Any] | None = None,
    drop_empty: bool = False,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Convert COCO or VOC detection annotations into a multi-label Parquet catalog (module docstring: the rules).

    Args:
        source: the release folder (``coco128/``, ``coco_mini/``, a Roboflow export, ``bccd/`` or ``bccd/BCCD``).
        out: catalog directory to write (new, empty, or a catalog fewray wrote; replaced atomically).
        image_size: output side in pixels (default 224). resize_mode: ``stretch`` (default) or ``center_crop``;
            image_format: ``png`` (default) or ``jpeg``; see :func:`~fewray.data.sources._common.resize_image`.
        progress: called with 1 after each image.
        splits: ``{split: annotation file relative to source}`` instead of the detected ones (COCO ``.json`` or
            VOC image-set ``.txt``); for COCO, a split may also list several files and ``{file: FILE, part: "k/n"}``
            entries (the module docstring's split files; :func:`read_annotation_split_file` reads one).
        drop_empty: leave out images without any object (default False: keep them with empty label sets).
        dataset: the ``dataset`` entry of ``catalog.json`` (default: the source folder's name).

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: ``out`` may not be written (checked first, before anything is read); a missing source or
            annotation file; annotations without categories or without any object ("a multi-label catalog
            needs labels"); invalid JSON/XML; an annotation of an unknown category or image; a missing image
            file; splits' files that disagree on a category's name; an image id in two splits; several files or
            parts of a split that are not COCO JSON; a bad size, mode or format. Nothing is
            written to ``out`` then, and every annotation is checked before the first image is read.

    Example::

        >>> info = prepare_multilabel("../shared/data/bccd", "data/bccd_ml", image_size=64)  # doctest: +SKIP
        >>> info["classes"], info["splits"]["train"]["images"]  # doctest: +SKIP
        (['Platelets', 'RBC', 'WBC'], 205)
    """
    source = require_dir(Path(source).expanduser(), "multi-label source directory")
    check_output_dir(out, (source,))
    check_image_options(image_size, resize_mode, image_format)
    entries = split_entries(splits) if splits else None
    if entries is None or all(len(v) == 1 and v[0][1] is None for v in entries.values()):
        fmt, files, root = find_annotations(source, {k: v[0][0] for k, v in entries.items()} if entries else None)
        sources = {split: [(path, None)] for split, path in files.items()}
    else:  # several files or parts of a split: COCO JSON only
        fmt, root, sources = "coco", source, {}
        for name, listed in entries.items():
            sources[name] = []
            for rel, part in listed:
                path = Path(rel) if Path(rel).is_absolute() else source / rel
                if not path.is_file():
                    raise DataError(f"annotation file not found: {path} (split '{name}')")
                if path.suffix.lower() != ".json":
                    raise DataError(f"split '{name}': several annotation files or parts work for COCO .json files "
                                    f"only, got {path}")
                sources[name].append((path, part))
    info: dict[str, Any] = {"dataset": dataset or source.name, "task": "multi_label", "format": fmt}
    duplicates: dict[str, int] = {}
    if fmt == "coco":
        names: dict[int, str] = {}
        parsed = {path: _load_json(path) for listed in sources.values() for path, _ in listed}
        for path, data in parsed.items():
            for cid, name in _coco_categories(path, data).items():
                if names.setdefault(cid, name) != name:
                    raise DataError(f"annotation files disagree on category {cid}: '{names[cid]}' and '{name}' "
                                    f"({path})")
        ids = sorted(names)
        index = {cid: i for i, cid in enumerate(ids)}
        items, owner = {}, {}
        for split, listed in sources.items():
            items[split], duplicates[split] = [], 0
            for path, part in listed:
                found = read_coco(path, parsed[path], source, index)
                for it in select_part(found, part) if part else found:
                    key = (it.image_id, Path(it.file_name).name)  # one photo (module docstring)
                    if owner.get(key, (split,))[0] != split:
                        raise DataError(f"image id {it.image_id} ({key[1]}) is in split '{owner[key][0]}' "
                                        f"({owner[key][1]}) and in split '{split}' ({path}): a catalog must not "
                                        f"test on its training images")
                    if key in owner:
                        duplicates[split] += 1
                        continue
                    owner[key] = (split, path)
                    items[split].append(it)
        classes = [names[c] for c in ids]
        info["category_ids"] = ids
        info["protocol"] = ("labels = the categories of each image's COCO annotations (crowd ones included), "
                            "classes = the JSON's categories sorted by id")
    else:
        classes, items = read_voc(root, {split: listed[0][0] for split, listed in sources.items()}, source)
        info["protocol"] = ("labels = the object names of each VOC annotation, difficult objects in "
                            "difficult_labels only; classes = the sorted object names")
    info.update(classes=classes, num_classes=len(classes), image_size=image_size, channels=3,
                resize_mode=resize_mode, image_format=image_format, splits={})
    with publish_atomically(out) as tmp:
        for split, split_items in items.items():
            empty = [it for it in split_items if not it.labels and not it.difficult]
            keep = [it for it in split_items if not (drop_empty and not it.labels and not it.difficult)]
            cols: dict[str, list] = {name: [] for name in SCHEMA.names}
            positives = [0] * len(classes)
            for it in keep:
                where = f"{it.file_name} (split '{split}')"
                img = open_image(it.path, where)
                cols["image"].append(encode_image(resize_image(img, image_size, resize_mode, where), image_format))
                labels = sorted(it.labels)
                cols["labels"].append(labels)
                cols["label_names"].append([classes[i] for i in labels])
                cols["difficult_labels"].append(sorted(it.difficult))
                cols["image_id"].append(it.image_id)
                cols["file_name"].append(it.file_name)
                for i in labels:
                    positives[i] += 1
                if progress:
                    progress(1)
            pq.write_table(pa.table(cols, schema=SCHEMA), Path(tmp) / f"{split}.parquet", row_group_size=4096)
            info["splits"][split] = {"images": len(keep), "images_without_objects": len(empty),
                                     "dropped_without_objects": len(split_items) - len(keep),
                                     "positives_per_class": positives}
            if entries is not None:  # a split file: which files (and parts) made the split
                info["splits"][split]["files"] = [_relative(path, source) + (f" part {part[0]}/{part[1]}" if part
                                                                              else "") for path, part in sources[split]]
                info["splits"][split]["duplicates_dropped"] = duplicates.get(split, 0)
        write_catalog_info(tmp, info)
    return info
