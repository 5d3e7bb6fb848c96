"""Every file of the corpus (bad, hostile and non-CT inputs) must end in either a clear
``InvalidImageError`` or the OOD guard's rejection: never an uncaught exception, never a
class. What each file must yield is listed in tests/corpus/manifest.json (and README.md),
both written by tests/make_corpus.py; the files themselves are built in memory by the same
script (deterministic, under a second) and checked against the manifest's SHA-256."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from lungct import guard as ood
from lungct.preprocess import InvalidImageError, decode_image

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
BY_FILE = {m["file"]: m for m in MANIFEST}
INVALID = [m["file"] for m in MANIFEST if m["expect"] == "invalid"]
REJECTED = [m["file"] for m in MANIFEST if m["expect"] == "rejected"]
GUARD_FILE = ood.guard_dir() / ood.WEIGHTS_FILE


@lru_cache(maxsize=1)
def built() -> dict[str, bytes]:
    """The corpus files, built by tests/make_corpus.py: file name -> bytes."""
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS.parent / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {e["file"]: e["data"] for e in mod.build()}


def data_of(file: str) -> bytes:
    return built()[file]


@pytest.fixture(scope="module")
def guard():
    if not GUARD_FILE.exists():
        pytest.skip(f"no fitted OOD guard at {GUARD_FILE} (python -m lungct guard fit)")
    return ood.InputGuard.load()


def pipeline(data: bytes, name: str, guard) -> tuple[str, str]:
    """The proposed production order: decode, then the guard, then (only then) a class.

    Returns ("invalid", message), ("rejected", reason) or ("class", "...").
    """
    try:
        gray = decode_image(data, name=name)
    except InvalidImageError as err:
        return "invalid", str(err)
    verdict = guard.check_upload(data, gray)
    if not verdict.in_distribution:
        return "rejected", verdict.reason
    return "class", "would be classified"


def test_corpus_is_complete_and_small():
    files = set(built())
    assert files == set(BY_FILE), "corpus and manifest disagree: run tests/make_corpus.py"
    assert len(MANIFEST) >= 40
    assert sum(len(data_of(f)) for f in files) < 2_000_000
    assert all(m["expect"] in ("invalid", "rejected") and m["keyword"] for m in MANIFEST)
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert all(f"| {m['file']} |" in readme for m in MANIFEST)
    for m in MANIFEST:
        assert len(data_of(m["file"])) == m["bytes"], m["file"]


def test_corpus_regenerates_byte_identically():
    assert set(built()) == set(BY_FILE)
    changed = [f for f in BY_FILE
               if hashlib.sha256(data_of(f)).hexdigest() != BY_FILE[f]["sha256"]]
    assert not changed, f"regenerate with `python tests/make_corpus.py`: {changed}"


def _clear(message: str) -> None:
    assert message and "\n" not in message and len(message) < 400
    assert "Traceback" not in message and " object at 0x" not in message


@pytest.mark.parametrize("file", INVALID)
def test_invalid_inputs_give_a_clear_error(file):
    m = BY_FILE[file]
    data = data_of(file)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(InvalidImageError) as info:
            decode_image(data, name=m["name"])
    message = str(info.value)
    _clear(message)
    assert m["keyword"].lower() in message.lower(), message


@pytest.mark.parametrize("file", REJECTED)
def test_decodable_non_ct_inputs_are_valid_arrays(file):
    m = BY_FILE[file]
    gray = decode_image(data_of(file), name=m["name"])
    assert gray.ndim == 2 and gray.dtype == np.float32
    assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1


@pytest.mark.parametrize("file", REJECTED)
def test_decodable_non_ct_inputs_are_rejected_by_the_guard(file, guard):
    m = BY_FILE[file]
    outcome, text = pipeline(data_of(file), m["name"], guard)
    assert outcome == "rejected", (outcome, text)
    if text.startswith(ood.OUTSIDE.split(":")[0]):
        # no lung fields found: never classified; said as such, not as "not CT"
        assert "no classification" in text
    else:
        assert text.startswith(ood.REJECTED)
        assert m["keyword"].lower() in text.lower(), text


@pytest.mark.parametrize("file", [m["file"] for m in MANIFEST])
def test_every_file_ends_invalid_or_rejected(file, guard):
    """Never an uncaught exception and never a class, whatever the file."""
    m = BY_FILE[file]
    try:
        outcome, text = pipeline(data_of(file), m["name"], guard)
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{file}: uncaught {type(err).__name__}: {err}")
    assert outcome == m["expect"], (outcome, text)
    _clear(text)


@pytest.mark.parametrize("file", [m["file"] for m in MANIFEST if m["name"] != m["file"]])
def test_upload_name_does_not_matter(file):
    """A hostile upload name (path traversal, unicode, NUL) gives the same result as a plain one."""
    m = BY_FILE[file]
    data = data_of(file)
    plain = "upload" + Path(m["name"]).suffix  # same extension, harmless name

    def outcome(name):
        try:
            return decode_image(data, name=name).tobytes()
        except InvalidImageError as err:
            return str(err)

    assert outcome(m["name"]) == outcome(plain)
