"""Pseudo-patients: group slices that must stay on one side of a split.

IQ-OTH/NCCD gives no patient IDs, but files are numbered in scan order, so a
patient's slices are consecutive numbers within a class folder. We join two
consecutive slices when their thumbnails still look alike and break the chain
where they stop; on top of that, exact duplicates and near-twins (correlation
above ``twin_corr``, in any class, at any distance in the numbering) are
joined too, so no test image has a near-identical copy in training.
"""

from __future__ import annotations

from collections import Counter

from lungct import CLASSES

import numpy as np

from lungct.data.similarity import correlation_matrix


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def group_slices(labels: list[str], numbers: list[int | None], thumbs: np.ndarray,
                 duplicate_keys: list[list[str]] = (), neighbour_corr: float = 0.55,
                 twin_corr: float = 0.95) -> list[str]:
    """Assign a pseudo-patient group id (``g000``...) to every image.

    Args:
        labels: class label per image.
        numbers: scan-order number per image (None when unknown: never chained).
        thumbs: unit-norm thumbnails, one row per image (see ``similarity.thumbnail``).
        duplicate_keys: lists of keys (byte MD5, pixel MD5...); equal keys join.
        neighbour_corr: consecutive slices of a class above this join.
        twin_corr: any two images above this join, across classes too.

    Group ids are numbered in order of first appearance, so the result is
    deterministic for a given input order.
    """
    n = len(labels)
    if not (len(numbers) == n == len(thumbs)):
        raise ValueError("labels, numbers and thumbs must have one entry per image")
    uf = _UnionFind(n)
    corr = correlation_matrix(thumbs)

    for label in sorted(set(labels)):
        idx = [i for i in range(n) if labels[i] == label and numbers[i] is not None]
        idx.sort(key=lambda i: numbers[i])
        for a, b in zip(idx, idx[1:]):
            if corr[a, b] >= neighbour_corr:
                uf.union(a, b)

    for keys in duplicate_keys:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in first:
                uf.union(first[key], i)
            else:
                first[key] = i

    rows, cols = np.nonzero(np.triu(corr >= twin_corr, k=1))
    for i, j in zip(rows.tolist(), cols.tolist()):
        uf.union(i, j)

    names: dict[int, str] = {}
    out = []
    for i in range(n):
        root = uf.find(i)
        if root not in names:
            names[root] = f"g{len(names):03d}"
        out.append(names[root])
    return out


def group_label(groups: list[str], labels: list[str]) -> dict[str, str]:
    """The majority label of each group (ties go to the earlier class in CLASSES)."""
    by_group: dict[str, Counter] = {}
    for g, lab in zip(groups, labels):
        by_group.setdefault(g, Counter())[lab] += 1
    order = list(CLASSES) + sorted(set(labels) - set(CLASSES))
    return {g: max((lab for lab in order if lab in c), key=c.__getitem__)
            for g, c in by_group.items()}


def cross_class_twins(labels: list[str], thumbs: np.ndarray, twin_corr: float = 0.95):
    """Pairs (i, j, corr) of images with different labels that look near-identical."""
    corr = correlation_matrix(thumbs)
    rows, cols = np.nonzero(np.triu(corr >= twin_corr, k=1))
    return [(int(i), int(j), float(corr[i, j])) for i, j in zip(rows, cols)
            if labels[i] != labels[j]]
