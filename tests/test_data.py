"""Tests for lungct.data: discovery, pseudo-patient grouping, splits, manifest, leakage.

Everything except the ``real_root`` tests runs on synthetic images written to a
temporary folder, so the suite passes on a fresh clone without the dataset.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lungct import CLASSES
from lungct.config import REPO_ROOT, load_config, resolve
from lungct.data.discover import ImageRecord, discover, file_number, folder_label
from lungct.data.grouping import cross_class_twins, group_label, group_slices
from lungct.data.leakage import leakage_report, pixel_1nn_accuracy
from lungct.data.similarity import correlation_matrix, thumbnail
from lungct.data.splits import (MANIFEST_COLUMNS, PARTS, _allocate, build_manifest,
                                read_manifest, stratified_split, write_manifest)

FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}
COMMITTED_MANIFEST = REPO_ROOT / "data" / "splits.csv"


# ------------------------------------------------------------------ helpers

def smooth_basis(n: int, size: int = 64, grid: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` smooth, zero-mean, mutually orthonormal fields of ``size`` x ``size``.

    Orthogonal fields have correlation ~0 with each other, so images built from
    different fields are "different patients" and images mixing the same two
    fields at nearby angles are "consecutive slices".
    """
    rng = np.random.default_rng(seed)
    cols = []
    for _ in range(n):
        coarse = rng.standard_normal((grid, grid)).astype(np.float32)
        fine = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
        cols.append(np.asarray(fine, dtype=np.float64).ravel())
    m = np.stack(cols, axis=1)
    m -= m.mean(axis=0)
    q, _ = np.linalg.qr(m)
    return q.T.reshape(n, size, size)


def to01(v: np.ndarray) -> np.ndarray:
    return ((v - v.min()) / (v.max() - v.min())).astype(np.float32)


def patient(a: np.ndarray, b: np.ndarray, n: int, step: float = 0.6) -> list[np.ndarray]:
    """``n`` slowly changing slices: neighbours correlate ~cos(step), two apart ~cos(2 step)."""
    return [to01(np.cos(k * step) * a + np.sin(k * step) * b) for k in range(n)]


def partition(groups: list[str]) -> set[frozenset[int]]:
    """Group ids -> the set of index sets (ids themselves are arbitrary)."""
    by = defaultdict(set)
    for i, g in enumerate(groups):
        by[g].add(i)
    return {frozenset(s) for s in by.values()}


def write_image(path: Path, gray01: np.ndarray | None = None, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gray01 is None:
        gray01 = np.linspace(0, 1, size * size, dtype=np.float32).reshape(size, size)
    img = Image.fromarray(np.round(gray01 * 255).astype(np.uint8), mode="L")
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    img.save(path, fmt)


def parts_of(rows: list[dict], key: str, column: str) -> dict[str, set[str]]:
    out = defaultdict(set)
    for r in rows:
        out[r[key]].add(r[column])
    return out


def assert_no_leak(rows: list[dict]) -> None:
    """No group in two grouped parts; no md5 in two parts of either split."""
    for key, column in [("group", "grouped_split"), ("md5", "grouped_split"),
                        ("md5", "paper_split")]:
        spread = {k: v for k, v in parts_of(rows, key, column).items() if len(v) > 1}
        assert not spread, f"{key} values in several {column} parts: {list(spread.items())[:5]}"


@pytest.fixture(scope="module")
def real_root() -> Path:
    root = resolve(load_config()["data"]["root"])
    if not root.exists():
        pytest.skip(f"IQ-OTH/NCCD dataset not found at {root}: set LUNGCT_DATA or unpack it "
                    "to data/raw/iq-othnccd to run the real-data tests")
    return root


# ---------------------------------------------------------------- discover

def test_folder_label_and_file_number():
    assert folder_label("Bengin cases") == "benign"
    assert folder_label("Malignant cases") == "malignant"
    assert folder_label("Normal cases") == "normal"
    assert folder_label("NORMAL") == "normal"
    assert folder_label("benign") == "benign"
    assert folder_label("misc") is None
    assert file_number("Bengin case (3).jpg") == 3
    assert file_number("Normal case (134).jpg") == 134
    assert file_number("scan.png") is None


def test_discover_iq_othnccd_layout(tmp_path):
    for name in ["Bengin cases/Bengin case (3).jpg", "Bengin cases/Bengin case (10).jpg",
                 "Bengin cases/Bengin case (2).jpg", "Malignant cases/Malignant case (1).jpg",
                 "Normal cases/Normal case (40).png", "Normal cases/Normal case (5).jpg",
                 "misc/Normal case (1).jpg", "Normal cases/thumbs/Normal case (7).JPG"]:
        write_image(tmp_path / name)
    (tmp_path / "Normal cases" / "readme.txt").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "Normal case (99).jpg").write_bytes(b"top-level file, not in a class folder")

    records = discover(tmp_path)
    assert [(r.path, r.label, r.number) for r in records] == [
        ("Normal cases/Normal case (5).jpg", "normal", 5),
        ("Normal cases/thumbs/Normal case (7).JPG", "normal", 7),
        ("Normal cases/Normal case (40).png", "normal", 40),
        ("Bengin cases/Bengin case (2).jpg", "benign", 2),
        ("Bengin cases/Bengin case (3).jpg", "benign", 3),
        ("Bengin cases/Bengin case (10).jpg", "benign", 10),
        ("Malignant cases/Malignant case (1).jpg", "malignant", 1),
    ]
    assert all(isinstance(r, ImageRecord) for r in records)
    assert [r.label_index for r in records] == [0, 0, 0, 1, 1, 1, 2]
    assert discover(tmp_path) == records  # stable


def test_discover_generic_layout(tmp_path):
    for name in ["NORMAL/b_2.png", "NORMAL/a_1.png", "benign/scan 7.jpeg", "benign/x.png",
                 "Malignant/m (12).PNG", "Malignant/m (3).bmp", "unrelated/z.png"]:
        write_image(tmp_path / name)
    records = discover(tmp_path)
    assert [(r.path, r.label, r.number) for r in records] == [
        ("NORMAL/a_1.png", "normal", 1),
        ("NORMAL/b_2.png", "normal", 2),
        ("benign/x.png", "benign", None),     # no number: sorted first
        ("benign/scan 7.jpeg", "benign", 7),
        ("Malignant/m (3).bmp", "malignant", 3),
        ("Malignant/m (12).PNG", "malignant", 12),
    ]


def test_discover_missing_folder_mentions_lungct_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="LUNGCT_DATA"):
        discover(tmp_path / "absent")


def test_discover_folder_without_class_folders(tmp_path):
    write_image(tmp_path / "misc" / "a (1).png")
    with pytest.raises(FileNotFoundError, match="Normal cases"):
        discover(tmp_path)


# ---------------------------------------------------------------- grouping

@pytest.fixture(scope="module")
def two_patients():
    """normal: patient A (numbers 1-5) then B (6-10); benign: patient C (1-5)."""
    basis = smooth_basis(6, seed=1)
    a, b, c = patient(basis[0], basis[1], 5), patient(basis[2], basis[3], 5), \
        patient(basis[4], basis[5], 5)
    images = a + b + c
    labels = ["normal"] * 10 + ["benign"] * 5
    numbers = list(range(1, 11)) + list(range(1, 6))
    thumbs = np.stack([thumbnail(g) for g in images])
    return images, labels, numbers, thumbs


def test_synthetic_patients_have_the_intended_correlations(two_patients):
    """Precondition of the grouping tests: chaining, not twin-joining, must link slices."""
    _, _, _, thumbs = two_patients
    corr = correlation_matrix(thumbs)
    for start in (0, 5, 10):
        for k in range(4):
            assert 0.7 < corr[start + k, start + k + 1] < 0.95   # neighbours: chain, not twins
        for k in range(3):
            assert corr[start + k, start + k + 2] < 0.55         # two apart: no direct link
    for p, q in [(0, 5), (0, 10), (5, 10)]:
        assert np.abs(corr[p:p + 5, q:q + 5]).max() < 0.3        # patients differ


def test_group_slices_chains_neighbours_and_breaks_between_patients(two_patients):
    _, labels, numbers, thumbs = two_patients
    groups = group_slices(labels, numbers, thumbs)
    assert partition(groups) == {frozenset(range(0, 5)), frozenset(range(5, 10)),
                                 frozenset(range(10, 15))}
    assert groups[0] == "g000"  # numbered by first appearance
    assert all(re.fullmatch(r"g\d{3}", g) for g in groups)


def test_group_slices_uses_numbers_not_input_order(two_patients):
    _, labels, numbers, thumbs = two_patients
    order = list(range(15))
    random.Random(3).shuffle(order)
    groups = group_slices([labels[i] for i in order], [numbers[i] for i in order], thumbs[order])
    back = [None] * 15
    for pos, i in enumerate(order):
        back[i] = groups[pos]
    assert partition(back) == {frozenset(range(0, 5)), frozenset(range(5, 10)),
                               frozenset(range(10, 15))}


def test_group_slices_thresholds(two_patients):
    _, labels, numbers, thumbs = two_patients
    # neighbour_corr above every neighbour correlation: nothing chains
    assert len(set(group_slices(labels, numbers, thumbs, neighbour_corr=0.99))) == 15
    # a slice without a number is never chained
    no_number = list(numbers)
    no_number[2] = None
    groups = group_slices(labels, no_number, thumbs)
    assert groups[2] not in {groups[i] for i in range(15) if i != 2}
    assert groups[0] == groups[1] and groups[3] == groups[4] and groups[1] != groups[3]


def test_group_slices_duplicate_keys_join_far_apart_images(two_patients):
    _, labels, numbers, thumbs = two_patients
    keys = [f"k{i}" for i in range(15)]
    keys[12] = keys[1]               # patient C's slice 3 "is a copy of" A's slice 2
    groups = group_slices(labels, numbers, thumbs, duplicate_keys=[keys])
    assert partition(groups) == {frozenset(list(range(0, 5)) + list(range(10, 15))),
                                 frozenset(range(5, 10))}
    # several key lists: each one joins
    other = [f"o{i}" for i in range(15)]
    other[9] = other[0]
    groups = group_slices(labels, numbers, thumbs, duplicate_keys=[keys, other])
    assert len(set(groups)) == 1


def test_group_slices_cross_class_twin_joins_groups(two_patients):
    images, labels, numbers, thumbs = two_patients
    rng = np.random.default_rng(0)
    twin = to01(images[7] + 0.01 * rng.standard_normal(images[7].shape))  # near-copy of B[2]
    labels2 = labels + ["malignant"]
    numbers2 = numbers + [1]
    thumbs2 = np.vstack([thumbs, thumbnail(twin)[None]])
    assert correlation_matrix(thumbs2)[7, 15] > 0.95
    groups = group_slices(labels2, numbers2, thumbs2)
    assert groups[15] == groups[5] == groups[9]
    assert partition(groups) == {frozenset(range(0, 5)), frozenset(list(range(5, 10)) + [15]),
                                 frozenset(range(10, 15))}
    # twin_corr above 1: the twin stays alone
    alone = group_slices(labels2, numbers2, thumbs2, twin_corr=1.01)
    assert alone[15] not in alone[:15]

    twins = cross_class_twins(labels2, thumbs2)
    assert [(i, j) for i, j, _ in twins] == [(7, 15)]
    assert twins[0][2] > 0.95
    # a same-class twin is not a cross-class twin
    assert cross_class_twins(labels[:10] + ["normal"], thumbs2[:11].copy()) == []


def test_group_slices_is_deterministic(two_patients):
    _, labels, numbers, thumbs = two_patients
    first = group_slices(labels, numbers, thumbs)
    assert group_slices(list(labels), list(numbers), thumbs.copy()) == first


def test_group_slices_length_mismatch(two_patients):
    _, labels, numbers, thumbs = two_patients
    with pytest.raises(ValueError):
        group_slices(labels[:-1], numbers, thumbs)
    with pytest.raises(ValueError):
        group_slices(labels, numbers[:-1], thumbs)
    with pytest.raises(ValueError):
        group_slices(labels, numbers, thumbs[:-1])


def test_group_label_majority():
    groups = ["g000", "g000", "g000", "g001", "g002", "g002"]
    labels = ["normal", "benign", "benign", "malignant", "normal", "normal"]
    assert group_label(groups, labels) == {"g000": "benign", "g001": "malignant",
                                           "g002": "normal"}


def test_group_label_ties_follow_classes_order():
    assert group_label(["g0", "g0"], ["benign", "normal"]) == {"g0": "normal"}


# ------------------------------------------------------------------ splits

def test_allocate_equal_units_hits_fractions():
    units = [(f"u{i:03d}", 1) for i in range(100)]
    out = _allocate(units, FRACTIONS, random.Random(0))
    counts = Counter(out.values())
    assert set(out) == {u for u, _ in units}
    for part, frac in FRACTIONS.items():
        assert abs(counts[part] - 100 * frac) <= 1, counts


def test_allocate_unequal_units_stays_close_to_fractions():
    rng = random.Random(5)
    units = [(f"u{i:03d}", rng.randint(1, 12)) for i in range(80)]
    total = sum(s for _, s in units)
    out = _allocate(units, FRACTIONS, random.Random(1))
    filled = Counter()
    for unit, size in units:
        filled[out[unit]] += size
    for part, frac in FRACTIONS.items():
        assert abs(filled[part] / total - frac) < 0.03, filled


def test_stratified_split_deterministic_per_seed_and_per_class():
    units = {c: [(f"{c}{i:03d}", 1) for i in range(50)] for c in CLASSES}
    a = stratified_split(units, FRACTIONS, seed=42)
    assert stratified_split(units, FRACTIONS, seed=42) == a
    assert stratified_split(units, FRACTIONS, seed=7) != a
    for c in CLASSES:
        counts = Counter(a[u] for u, _ in units[c])
        for part, frac in FRACTIONS.items():
            assert abs(counts[part] - 50 * frac) <= 1, (c, counts)
    # a class with no units is fine
    assert stratified_split({"normal": units["normal"]}, FRACTIONS, 1).keys() == \
        {u for u, _ in units["normal"]}


N_PATIENTS, N_SLICES = 5, 4
FOLDERS = {"normal": ("Normal cases", "Normal case"), "benign": ("Bengin cases", "Bengin case"),
           "malignant": ("Malignant cases", "Malignant case")}


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    """3 classes x 5 patients x 4 slices (PNG), plus a byte copy of a normal slice filed
    as the last benign slice. Returns (root, expected groups as sets of paths)."""
    root = tmp_path_factory.mktemp("iq")
    basis = smooth_basis(2 * 3 * N_PATIENTS, seed=11)
    expected = []
    k = 0
    for label in CLASSES:
        folder, stem = FOLDERS[label]
        number = 1
        for _ in range(N_PATIENTS):
            paths = set()
            for img in patient(basis[k], basis[k + 1], N_SLICES):
                rel = f"{folder}/{stem} ({number}).png"
                write_image(root / rel, img)
                paths.add(rel)
                number += 1
            expected.append(paths)
            k += 2
    source = "Normal cases/Normal case (2).png"
    copy = f"Bengin cases/Bengin case ({N_PATIENTS * N_SLICES + 1}).png"
    (root / copy).write_bytes((root / source).read_bytes())
    for paths in expected:
        if source in paths:
            paths.add(copy)
    return root, expected


@pytest.fixture(scope="module")
def synthetic_manifest(synthetic_dataset):
    root, _ = synthetic_dataset
    return build_manifest(root, FRACTIONS, seed=42)


def test_build_manifest_groups_are_the_patients(synthetic_dataset, synthetic_manifest):
    _, expected = synthetic_dataset
    rows = synthetic_manifest
    assert len(rows) == 3 * N_PATIENTS * N_SLICES + 1
    assert all(tuple(r) == MANIFEST_COLUMNS for r in rows)
    by_group = defaultdict(set)
    for r in rows:
        by_group[r["group"]].add(r["path"])
    assert sorted(map(sorted, by_group.values())) == sorted(map(sorted, expected))


def test_build_manifest_has_no_leakage(synthetic_manifest):
    rows = synthetic_manifest
    md5s = Counter(r["md5"] for r in rows)
    assert sorted(md5s.values())[-1] == 2  # the planted byte duplicate
    assert_no_leak(rows)
    for column in ("paper_split", "grouped_split"):
        assert {r[column] for r in rows} == set(PARTS), column
    for label in CLASSES:  # paper split is stratified image by image
        assert {r["paper_split"] for r in rows if r["label"] == label} == set(PARTS)


def test_build_manifest_is_deterministic(synthetic_dataset, synthetic_manifest, tmp_path):
    root, _ = synthetic_dataset
    again = build_manifest(root, FRACTIONS, seed=42)
    assert again == synthetic_manifest
    write_manifest(synthetic_manifest, tmp_path / "a.csv")
    write_manifest(again, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_manifest_round_trip(synthetic_manifest, tmp_path):
    path = tmp_path / "sub" / "splits.csv"
    write_manifest(synthetic_manifest, path)
    text = path.read_bytes()
    assert b"\r\n" not in text
    assert text.splitlines()[0] == ",".join(MANIFEST_COLUMNS).encode()
    assert read_manifest(path) == synthetic_manifest


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lungct lab split"):
        read_manifest(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,normal\n")
    with pytest.raises(ValueError, match="lacks columns"):
        read_manifest(bad)


# --------------------------------------------------- the committed manifest

def test_committed_manifest_is_valid():
    """Runs without the dataset: the shipped data/splits.csv is well formed and leak-free."""
    rows = read_manifest(COMMITTED_MANIFEST)
    with open(COMMITTED_MANIFEST, encoding="utf-8") as fh:
        assert fh.readline().strip() == "path,label,md5,group,paper_split,grouped_split"
    assert len({r["path"] for r in rows}) == len(rows)
    for r in rows:
        assert r["label"] in CLASSES
        assert folder_label(r["path"].split("/")[0]) == r["label"], r["path"]
        assert re.fullmatch(r"[0-9a-f]{32}", r["md5"]), r
        assert re.fullmatch(r"g\d{3}", r["group"]), r
        assert r["paper_split"] in PARTS and r["grouped_split"] in PARTS, r
    assert_no_leak(rows)
    for column in ("paper_split", "grouped_split"):
        for label in CLASSES:
            assert {r[column] for r in rows if r["label"] == label} == set(PARTS)


def test_committed_manifest_matches_a_fresh_build(real_root, tmp_path, capsys):
    from lungct.cli import main
    out = tmp_path / "splits.csv"
    assert main(["lab", "split", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes() == COMMITTED_MANIFEST.read_bytes()


def test_real_dataset_counts_and_duplicates(real_root):
    rows = read_manifest(COMMITTED_MANIFEST)
    assert len(rows) == 1097
    assert len(discover(real_root)) == 1097
    md5s = Counter(r["md5"] for r in rows)
    # the dataset has 42 byte-identical pairs: 84 rows whose md5 occurs twice,
    # i.e. 42 files that are copies of another file
    assert sum(1 for r in rows if md5s[r["md5"]] > 1) == 84
    assert sum(n - 1 for n in md5s.values() if n > 1) == 42
    assert max(md5s.values()) == 2
    assert_no_leak(rows)


def test_real_dataset_leakage_report(real_root):
    cfg = load_config()
    rows = read_manifest(COMMITTED_MANIFEST)
    report = leakage_report(real_root, rows, cfg["grouping"]["twin_corr"], cfg["data"]["seed"])
    assert report["grouped"]["share_test_with_twin"] < 0.02
    assert report["paper"]["pixel_1nn_accuracy"] > 0.9
    assert report["grouped"]["pixel_1nn_accuracy"] < report["paper"]["pixel_1nn_accuracy"]
    # every cross-class near-twin pair sits in one group, hence one grouped part
    assert all(t["same_group"] and t["same_grouped_part"] for t in report["cross_class_twins"])


# ----------------------------------------------------------------- leakage

def test_pixel_1nn_accuracy_hand_made():
    train_x = np.array([[0.0, 0.0], [10.0, 10.0], [0.0, 10.0]], dtype=np.float32)
    train_y = np.array([0, 1, 2])
    test_x = np.array([[1.0, 1.0], [9.0, 9.0], [6.0, 6.0], [1.0, 8.0]], dtype=np.float32)
    assert pixel_1nn_accuracy(train_x, train_y, test_x, np.array([0, 1, 1, 2])) == 1.0
    assert pixel_1nn_accuracy(train_x, train_y, test_x, np.array([0, 1, 0, 0])) == 0.5
