"""Benchmark: size and CPU speed of every shipped model, with VGG16 as the reference.

    python -m lungct.bench [--write-cards] [--repeats 30] [--batch 32]

Per model: parameters, FLOPs, weight file size, median single-image latency
end to end from file bytes (decode, preprocess, forward) and batched
throughput (preprocess + forward, images/s), and each model's speed as a
ratio to VGG16 (torchvision VGG16 at 224 px, 3-class head; its weights do
not change its speed). Run it on a quiet machine: numbers are only
comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lungct.config import resolve
from lungct.model_stats import count_flops, single_image_latency_ms
from lungct.models import create_model, list_shipped, load_model
from lungct.models.checkpoint import MODELS_DIR, read_card, write_card
from lungct.preprocess import decode_image, to_tensor


def batch_throughput(model, data: list[bytes], batch: int = 32, rounds: int = 3) -> float:
    """Images per second for decode + preprocess + forward in batches."""
    grays = [decode_image(d) for d in data]
    rates = []
    for _ in range(rounds + 1):
        start = time.perf_counter()
        for i in range(0, len(grays), batch):
            x = torch.stack([to_tensor(g, model.input_size, model.mean, model.std)
                             for g in grays[i:i + batch]])
            with torch.inference_mode():
                model(x)
        rates.append(len(grays) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_model(model, name: str, samples: list[bytes], repeats: int, batch: int,
                folder: Path | None) -> dict:
    row = {"model": name, "arch": model.arch, "input_size": model.input_size,
           "params": sum(p.numel() for p in model.parameters()),
           "flops": count_flops(model, model.input_size)}
    if folder is not None and (folder / "model.safetensors").exists():
        row["weights_mb"] = round((folder / "model.safetensors").stat().st_size / 2**20, 2)
    row["latency_ms"] = round(single_image_latency_ms(model, samples[0], repeats), 2)
    row["throughput_ips"] = round(batch_throughput(model, samples * (64 // len(samples) + 1),
                                                   batch), 1)
    return row


def run(repeats: int = 30, batch: int = 32, write_cards: bool = False,
        models: list[str] | None = None) -> list[dict]:
    samples = [p.read_bytes() for p in sorted(resolve("samples").glob("*.jpg"))]
    if not samples:
        raise FileNotFoundError("no samples/*.jpg to benchmark with")
    rows = []
    reference = create_model("vgg16", pretrained=False).eval()
    rows.append(bench_model(reference, "vgg16 (reference, 224 px)", samples, max(5, repeats // 3),
                            batch, None))
    for name in models or list_shipped():
        folder = MODELS_DIR / name
        if not (folder / "model.safetensors").exists():
            continue
        rows.append(bench_model(load_model(name), name, samples, repeats, batch, folder))
    ref = rows[0]
    for row in rows:
        row["speedup_vs_vgg16"] = round(ref["latency_ms"] / row["latency_ms"], 1)
        row["flops_ratio_vs_vgg16"] = round(row["flops"] / ref["flops"], 4)
    if write_cards:
        for row in rows[1:]:
            card = read_card(MODELS_DIR / row["model"])
            card["stats"] = {**card.get("stats", {}), **{
                "params": row["params"], "flops": row["flops"],
                "weights_mb": row.get("weights_mb"), "cpu_latency_ms": row["latency_ms"],
                "cpu_throughput_ips": row["throughput_ips"],
                "speedup_vs_vgg16": row["speedup_vs_vgg16"],
                "measured_with": "python -m lungct.bench", "threads": torch.get_num_threads()}}
            write_card(MODELS_DIR / row["model"], card)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'model':<28}{'params':>10}{'GFLOPs':>8}{'MB':>7}{'ms/img':>8}"
            f"{'img/s':>8}{'x VGG16':>9}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['model']:<28}{r['params'] / 1e6:>9.2f}M{r['flops'] / 1e9:>8.2f}"
                     f"{r.get('weights_mb') or 0:>7.1f}{r['latency_ms']:>8.1f}"
                     f"{r['throughput_ips']:>8.1f}{r['speedup_vs_vgg16']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lungct.bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--write-cards", action="store_true",
                        help="store latency and throughput in each model card")
    parser.add_argument("--models", nargs="*", help="model names (default: all shipped)")
    parser.add_argument("--out", default="reports/bench.json")
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.batch, args.write_cards, args.models)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(format_rows(rows))
    out = resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
