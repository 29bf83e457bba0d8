"""Labelled sets and same/different-person photo pairs: a pair list (deepface's CSV) or every
pair of single-person photos in labels.csv."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.eval_runner import DEFAULT_EXCLUDE
from pipelines.evaluate import LabelledSet


def load_set(root: str | os.PathLike[str]) -> LabelledSet:
    """A labelled folder in the shared layout (labels.csv, video_truth.csv, ...)."""
    return LabelledSet.load(Path(root))


@dataclass(frozen=True)
class Pair:
    """Two photos (paths) and whether they show the same person."""

    a: Path
    b: Path
    genuine: bool


def find_pair_images(root: Path, names: Iterable[str]) -> Path:
    """The folder under ``root`` holding every file named in a pair list.

    deepface's pair lists name bare files (img1.jpg); in the shared layout they sit under
    images/serengil_deepface/tests/unit/dataset/, but any folder holding them all will do.
    """
    names = sorted(set(names))
    if not names:
        raise ValueError("the pair list names no files")
    preferred = root / "images" / "serengil_deepface" / "tests" / "unit" / "dataset"
    if all((preferred / n).is_file() for n in names):
        return preferred
    for folder in sorted({p.parent for p in root.rglob(names[0]) if p.is_file()}):
        if all((folder / n).is_file() for n in names):
            return folder
    raise FileNotFoundError(f"no folder under {root} holds all {len(names)} files of the pair list")


def read_pairs(csv_path: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None) -> list[Pair]:
    """Same/different-person pairs from a CSV with file_x, file_y, Decision (Yes/No).

    ``image_dir`` is where the files are; by default the folder under the CSV's folder that
    holds them all (``find_pair_images``). Rows whose decision is neither Yes nor No fail.
    """
    import csv

    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        missing = {"file_x", "file_y", "decision"} - set(fields)
        if missing:
            raise ValueError(f"{csv_path}: missing columns {sorted(missing)}")
        rows = []
        for row in reader:
            x, y = (row[fields["file_x"]] or "").strip(), (row[fields["file_y"]] or "").strip()
            decision = (row[fields["decision"]] or "").strip().lower()
            if not (x or y or decision):
                continue
            if decision not in ("yes", "no"):
                raise ValueError(f"{csv_path}:{reader.line_num}: Decision must be Yes or No, not {decision!r}")
            rows.append((x, y, decision == "yes"))
    folder = (
        Path(image_dir)
        if image_dir is not None
        else find_pair_images(csv_path.parent, [n for r in rows for n in r[:2]])
    )
    return [Pair(folder / x, folder / y, same) for x, y, same in rows]


def label_pairs(labelled: LabelledSet, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> list[Pair]:
    """Every pair of single-person photos in labels.csv: same identity genuine, different
    identities impostor (for sets without a pair list). Pure."""
    import fnmatch
    from collections import Counter

    people_in = Counter(p for paths in labelled.photos.values() for p in paths)
    photos = sorted(
        (rel, who)
        for who, paths in labelled.photos.items()
        for rel in paths
        if people_in[rel] == 1 and not any(fnmatch.fnmatch(rel, pattern) for pattern in exclude)
    )
    return [
        Pair(labelled.root / a, labelled.root / b, wa == wb) for (a, wa), (b, wb) in itertools.combinations(photos, 2)
    ]
