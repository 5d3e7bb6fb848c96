"""Pack the dataset, decoded and resized, for a remote GPU box with a small upload limit.

The 1097 source JPEGs are 71 MB; a rented or lent GPU machine may accept far
less. Training only ever sees each slice after ``lungct.preprocess`` has
decoded it and resized it to the model size (``lungct.training.datasets.preload``),
so this writes exactly that uint8 image, losslessly as PNG, under the
manifest's own relative paths (the names keep their ``.jpg`` suffix:
``lungct`` decodes by content, never by extension). Point ``LUNGCT_DATA`` at
the output folder and train at the same ``--size``: ``preload`` then
reproduces the very same arrays (``--check`` verifies a sample).

    python training/pack_data.py --size 320 --out .gpu/data --check 50
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lungct.config import load_config, resolve
from lungct.data.splits import read_manifest
from lungct.training.datasets import preload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, required=True, help="training image size (pixels)")
    ap.add_argument("--out", required=True, help="output folder (the new LUNGCT_DATA)")
    ap.add_argument("--check", type=int, default=0,
                    help="re-read N packed slices through preload and compare")
    args = ap.parse_args(argv)
    cfg = load_config()
    rows = read_manifest(resolve(cfg["data"]["manifest"]))
    root, out = resolve(cfg["data"]["root"]), Path(args.out)
    images, _ = preload(root, rows, args.size)
    total = 0
    for row, img in zip(rows, images.numpy()):
        dest = out / row["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG", optimize=True)
        dest.write_bytes(buf.getvalue())
        total += buf.tell()
    print(f"packed {len(rows)} slices at {args.size} px into {out} ({total / 1e6:.1f} MB)")
    if args.check:
        sample = rows[:: max(1, len(rows) // args.check)]
        again, _ = preload(out, sample, args.size)
        first, _ = preload(root, sample, args.size)
        diff = (again.int() - first.int()).abs().max().item()
        print(f"check: {len(sample)} slices, max |packed - source| = {diff} grey levels")
        if diff:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
