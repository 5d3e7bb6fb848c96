"""The benchmark's verdicts on the speed goals come from the report's own figures."""

from lungct.lab.bench import TARGETS, format_report, targets


def _report(latency, guarded, cli_on, cli_off):
    row = {"model": "m", "backend": "onnx", "latency_ms": latency, "latency_cpu_ms": latency,
           "throughput_ips": 100.0, "speedup_vs_vgg16": 12.0, "params": 3e6, "flops": 1.5e9}
    ref = {**row, "model": "vgg16 (reference, 224 px)", "backend": "torch"}
    cli = [{"model": "m", "backend": "onnx", "marginal_ips": ips, "throughput_ips": ips - 5,
            "guard": guard, "images": 10, "seconds": 1.0, "half_seconds": 0.5, "batch_size": 32,
            "errors": 0, "folder": "x", "processes": 2}
           for ips, guard in ((cli_off, False), (cli_on, True))]
    return {"rows": [ref, row], "cli_folder": cli, "app_classify_with_heatmap": None,
            "single_image_with_guard": {"model": "m", "backend": "onnx", "guard_backend": "onnx",
                                        "status": "classified", "median_ms": guarded,
                                        "repeats": 5}}


def test_the_guarded_figures_decide_the_goals():
    report = _report(latency=7.0, guarded=25.0, cli_on=40.0, cli_off=120.0)
    t = targets(report, "m")
    assert t["met"] == {"latency": True, "latency_guard": False, "speedup": False, "cli": False}
    assert t["cli_ips"] == 40.0          # the guard-on figure, not the faster guard-off one
    assert t["cli_whole_run_ips"] == 35.0   # worker start-up included: reported beside it
    report["targets"] = t
    text = format_report(report)
    assert "with the guard 25.0 ms: NOT met" in text and "guard on: 40.0 img/s marginal, 35.0 over" in text
    assert "2 process(es), batch 8" in text
    fast = targets(_report(5.0, TARGETS["latency_ms"], TARGETS["cli_ips"], 300.0), "m")
    assert fast["met"]["latency_guard"] and fast["met"]["cli"]


def test_the_stages_of_one_image_are_printed_and_measured(tmp_path):
    """The per-stage breakdown behind the README's explanation of the missed goals."""
    from lungct.lab.bench import stage_ms
    from lungct.config import SAMPLES_DIR
    from lungct.guard import load_guard
    from lungct.inference import Classifier
    report = _report(latency=7.0, guarded=25.0, cli_on=40.0, cli_off=120.0)
    report["single_image_with_guard"]["stages_ms"] = {"decode": 1.0, "segmentation": 9.0}
    assert "its stages one at a time (ms, median): decode 1.0, segmentation 9.0" in \
        format_report(report)
    data = sorted(SAMPLES_DIR.glob("*.jpg"))[0].read_bytes()
    stages = stage_ms(Classifier.from_name("student_kd", backend="torch"), load_guard(), data,
                      repeats=2)
    assert list(stages) == ["decode", "segmentation", "lung_view", "guard_network",
                            "model_input", "model"]
    assert all(v > 0 for v in stages.values())


def test_cards_headline_the_backend_users_run(tmp_path, monkeypatch):
    """The shipped int8 ONNX file is the default backend: the card's headline latency and
    folder rates are its figures (the torch row's were stored before), with the marginal
    rate the goal uses beside the whole-run one."""
    import json

    from lungct.lab.bench import store_in_cards

    monkeypatch.setenv("LUNGCT_MODELS", str(tmp_path))
    monkeypatch.delenv("LUNGCT_BACKEND", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "card.json").write_text('{"name": "m"}', encoding="utf-8")
    report = _report(latency=7.0, guarded=10.0, cli_on=105.0, cli_off=180.0)
    onnx = {**report["rows"][1], "source": "model.int8.onnx", "latency_ms": 7.0}
    torch_row = {**onnx, "backend": "torch", "source": "eager", "latency_ms": 22.0}
    report["rows"] = [report["rows"][0], torch_row, onnx]
    report["cli_folder"] += [{**c, "backend": "torch", "marginal_ips": 12.0,
                              "throughput_ips": 11.0} for c in report["cli_folder"]]
    report.update(onnx_threads="auto", load_avg_1m=[0.5, 1.0])
    store_in_cards(report)
    stats = json.loads((tmp_path / "m" / "card.json").read_text(encoding="utf-8"))["stats"]
    assert stats["cpu_backend"] == "onnx" and stats["cpu_latency_ms"] == 7.0
    assert stats["cli_folder_marginal_ips"] == 105.0 and stats["cli_folder_ips"] == 100.0
    assert stats["cli_folder_marginal_ips_no_guard"] == 180.0
    assert set(stats["backends"]) == {"torch", "onnx"}
