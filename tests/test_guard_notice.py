"""The guard says so, in one line, when it runs on its slow PyTorch path (issue 24.8)."""

from lungct.guard import features


def test_missing_onnx_extractor_is_announced_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(features, "_EXTRACTORS", {})
    monkeypatch.setattr(features, "FeatureExtractor", lambda layers, size: object())
    missing = tmp_path / "extractor.onnx"
    first = features.shared_extractor(onnx_path=missing)
    again = features.shared_extractor(onnx_path=missing)
    err = capsys.readouterr().err
    assert first is again
    assert err.count("note: the input guard runs on PyTorch (extractor.onnx is missing)") == 1
    assert "make onnx" in err
