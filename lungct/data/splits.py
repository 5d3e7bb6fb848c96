"""The two splits and the manifest ``data/splits.csv`` that holds them.

- ``paper_split``: stratified, image-level 64/16/20, as the paper did, so
  results compare with the paper's. Exact duplicates still move together.
- ``grouped_split``: stratified by class, 64/16/20 by pseudo-patient groups;
  no group, duplicate or near-twin sits in two parts. The number we trust.

Both are seeded and deterministic: the same dataset and parameters give a
byte-identical manifest.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from pathlib import Path

from lungct import CLASSES
from lungct.data.discover import discover
from lungct.data.grouping import group_label, group_slices
from lungct.data.similarity import fingerprints

PARTS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "md5", "group", "paper_split", "grouped_split")


def _allocate(units: list[tuple[str, int]], fractions: dict[str, float],
              rng: random.Random) -> dict[str, str]:
    """Assign units (id, size) to parts so each part's image share nears its fraction.

    Units are shuffled, then taken largest first (ties in shuffled order), each
    going to the part that is furthest below its target count; this keeps
    parts close to 64/16/20 even when groups are of very different sizes.
    """
    units = list(units)
    rng.shuffle(units)
    units.sort(key=lambda u: -u[1])
    total = sum(size for _, size in units)
    filled = {part: 0 for part in PARTS}
    out = {}
    for unit, size in units:
        part = max(PARTS, key=lambda p: (fractions[p] * total - filled[p], -PARTS.index(p)))
        out[unit] = part
        filled[part] += size
    return out


def stratified_split(units_by_class: dict[str, list[tuple[str, int]]],
                     fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Split units (groups or duplicate sets) per class with one seeded RNG per class."""
    out: dict[str, str] = {}
    for k, label in enumerate(CLASSES):
        rng = random.Random(seed * 1000 + k)
        out.update(_allocate(units_by_class.get(label, []), fractions, rng))
    return out


def build_manifest(root: str | Path, fractions: dict[str, float], seed: int = 42,
                   thumb_size: int = 32, neighbour_corr: float = 0.55,
                   twin_corr: float = 0.95) -> list[dict]:
    """Discover, fingerprint, group and split a dataset; one dict per image."""
    records = discover(root)
    paths = [r.path for r in records]
    labels = [r.label for r in records]
    md5s, pixel_md5s, thumbs = fingerprints(root, paths, thumb_size)
    groups = group_slices(labels, [r.number for r in records], thumbs,
                          duplicate_keys=[md5s, pixel_md5s],
                          neighbour_corr=neighbour_corr, twin_corr=twin_corr)

    # grouped: whole pseudo-patients, stratified by each group's majority label
    sizes = defaultdict(int)
    for g in groups:
        sizes[g] += 1
    glabel = group_label(groups, labels)
    by_class = defaultdict(list)
    for g in sorted(sizes):
        by_class[glabel[g]].append((g, sizes[g]))
    grouped = stratified_split(by_class, fractions, seed)

    # paper: image level, but exact duplicates (same pixels) move together
    dup_key = {}
    for i, key in enumerate(pixel_md5s):
        dup_key.setdefault(key, f"d{i:04d}")
    dup_of = [dup_key[k] for k in pixel_md5s]
    dsizes = defaultdict(int)
    dlabel = {}
    for i, d in enumerate(dup_of):
        dsizes[d] += 1
        dlabel.setdefault(d, labels[i])
    by_class = defaultdict(list)
    for d in sorted(dsizes):
        by_class[dlabel[d]].append((d, dsizes[d]))
    paper = stratified_split(by_class, fractions, seed + 1)

    return [dict(path=paths[i], label=labels[i], md5=md5s[i], group=groups[i],
                 paper_split=paper[dup_of[i]], grouped_split=grouped[groups[i]])
            for i in range(len(records))]


def write_manifest(rows: list[dict], path: str | Path) -> None:
    """Write the manifest CSV (stable column and row order, LF line ends)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(path: str | Path) -> list[dict]:
    """Read the manifest; raises FileNotFoundError naming the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m lungct lab split`")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = set(MANIFEST_COLUMNS) - set(rows[0] if rows else MANIFEST_COLUMNS)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    return rows


def split_column(protocol: str) -> str:
    """Manifest column of a protocol: ``grouped`` -> grouped_split, ``paper`` -> paper_split."""
    if protocol not in ("grouped", "paper"):
        raise ValueError(f"protocol must be 'grouped' or 'paper', not {protocol!r}")
    return f"{protocol}_split"


def select(rows: list[dict], protocol: str, part: str) -> list[dict]:
    """Rows of one part (train/val/test) of one protocol."""
    column = split_column(protocol)
    return [r for r in rows if r[column] == part]
