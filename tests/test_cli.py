"""Tests for the command line (`python -m lungct ...`) through lungct.cli.main.

``predict`` runs a tiny random-initialised EfficientNet-Lite0 saved to a
temporary folder on the committed sample slices: no dataset, no shipped model.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lungct import CLASSES, slice_label
from lungct.cli import build_parser, main
from lungct.config import REPO_ROOT
from lungct.models import create_model, save_model

SAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained=False, input_size=64)
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny", {"name": "tiny"})


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.delenv("LUNGCT_BACKEND", raising=False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_prediction(out: dict, file: str) -> None:
    assert out["file"] == file
    assert {"file", "label", "probabilities", "model"} <= set(out)
    assert out["label"] in CLASSES
    assert list(out["probabilities"]) == list(CLASSES)
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in out["probabilities"].values())
    assert out["model"] == "tiny"
    assert out["label"] == slice_label(out["probabilities"])   # the case verdict's rule


def test_every_sample_is_credited_and_held_out():
    """Each shipped example is named in samples/README.md with its source file and label,
    its name says that label, and the source file is in the grouped split's test part (no
    shipped model was trained or selected on it), as the README claims."""
    import csv

    credits = {}
    for line in (REPO_ROOT / "samples" / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].endswith(".jpg"):
            credits[cells[0]] = (cells[1], cells[2])
    assert sorted(credits) == sorted(p.name for p in SAMPLES) and len(SAMPLES) == 6
    with open(REPO_ROOT / "data" / "splits.csv", newline="", encoding="utf-8") as fh:
        split = {row["path"]: row for row in csv.DictReader(fh)}
    for name, (source, label) in credits.items():
        assert name.startswith(label + "_") and label in CLASSES
        assert split[source]["label"] == label and split[source]["grouped_split"] == "test"


def test_predict_json_with_bad_files_in_between(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    missing = tmp_path / "missing.png"
    files = [SAMPLES[0], empty, text, SAMPLES[1], missing]
    rc = main(["predict", "--json", "--model", str(tiny_model_dir), *map(str, files)])
    assert rc == 0
    lines = json_lines(capsys.readouterr().out)
    assert [line["file"] for line in lines] == [str(f) for f in files]   # one per input, in order
    check_prediction(lines[0], str(SAMPLES[0]))
    check_prediction(lines[3], str(SAMPLES[1]))
    for bad in (lines[1], lines[2], lines[4]):
        assert set(bad) == {"file", "error"} and bad["error"]
    assert "empty" in lines[1]["error"]
    assert "text" in lines[2]["error"]


def test_predict_folder_expands_to_its_images(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "scans"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES[0], folder / "b.jpg")
    shutil.copy(SAMPLES[1], folder / "sub" / "a.JPG")
    (folder / "README.txt").write_text("not an image")
    rc = main(["predict", "--json", "--model", str(tiny_model_dir), str(folder)])
    assert rc == 0
    lines = json_lines(capsys.readouterr().out)
    assert [line["file"] for line in lines] == [str(folder / "b.jpg"),
                                                str(folder / "sub" / "a.JPG")]
    for line in lines:
        check_prediction(line, line["file"])


def test_predict_same_image_same_answer(tiny_model_dir, capsys):
    rc = main(["predict", "--json", "--model", str(tiny_model_dir), "--batch-size", "1",
               str(SAMPLES[0]), str(SAMPLES[0])])
    assert rc == 0
    first, second = json_lines(capsys.readouterr().out)
    assert first["probabilities"] == pytest.approx(second["probabilities"], abs=1e-6)


def test_predict_plain_text_output(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rc = main(["predict", "--model", str(tiny_model_dir), str(SAMPLES[0]), str(empty)])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{SAMPLES[0]}: ") and "model=tiny" in lines[0]
    assert lines[1].startswith(f"{empty}: ERROR")


def test_predict_unknown_model(capsys):
    rc = main(["predict", "--json", "--model", "no_such_model_xyz", str(SAMPLES[0])])
    assert rc == 2
    captured = capsys.readouterr()
    assert "error" in captured.err and "no_such_model_xyz" in captured.err
    assert captured.out == ""


def test_predict_broken_model_folder(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    rc = main(["predict", "--json", "--model", str(broken), str(SAMPLES[0])])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def _every_command() -> list[str]:
    from lungct.cli.parser import LAB_COMMANDS
    return [*_subcommands(), *(f"lab {name}" for name, _ in LAB_COMMANDS)]


@pytest.mark.parametrize("command", [None, *_every_command()])
def test_help(command, capsys):
    argv = ["--help"] if command is None else [*command.split(), "--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if command:
        assert command in out.splitlines()[0]


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
