"""Size and speed of a model: parameters, FLOPs, weight file size, CPU latency.

Latency is end to end from file bytes (decode, preprocess, forward) for one
image, the delay a radiologist feels; median of repeated runs after warm-up.
Figures depend on the machine and on whatever else runs on it: the
benchmark (``python -m lungct lab bench``) is the place to compare them.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lungct.preprocess import decode_image, to_tensor


def count_flops(model: torch.nn.Module, size: int) -> int:
    """Forward FLOPs (multiply and add counted separately) for one image."""
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def single_image_latency_ms(model: torch.nn.Module, data: bytes, repeats: int = 20,
                            warmup: int = 3) -> float:
    """Median milliseconds from file bytes to probabilities, one image at a time."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        x = to_tensor(decode_image(data), model.input_size, model.mean, model.std,
                      getattr(model, "view", "full"))
        with torch.inference_mode():
            torch.softmax(model(x.unsqueeze(0)), 1)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def model_stats(model: torch.nn.Module, folder: Path | None = None,
                sample: Path | None = None) -> dict:
    out = {"params": sum(p.numel() for p in model.parameters()),
           "flops": count_flops(model, model.input_size),
           "threads": torch.get_num_threads()}
    if folder is not None and (Path(folder) / "model.safetensors").exists():
        out["weights_mb"] = round((Path(folder) / "model.safetensors").stat().st_size / 2**20, 2)
    if sample is not None and Path(sample).exists():
        out["cpu_latency_ms"] = round(single_image_latency_ms(model, Path(sample).read_bytes()), 1)
    return out
