"""Counts of images and groups per class and part, for the terminal and README."""

from __future__ import annotations

from collections import Counter

from lungct import CLASSES

PARTS = ("train", "val", "test")


def split_summary(rows: list[dict]) -> dict:
    """Images and groups per (protocol, part, class); groups per class overall."""
    out = {"n_images": len(rows), "n_groups": len({r["group"] for r in rows}),
           "groups_per_class": {c: len({r["group"] for r in rows if r["label"] == c})
                                for c in CLASSES}}
    for protocol in ("paper", "grouped"):
        col = f"{protocol}_split"
        counts = Counter((r[col], r["label"]) for r in rows)
        groups = {p: len({r["group"] for r in rows if r[col] == p}) for p in PARTS}
        out[protocol] = {p: {"images": {c: counts[(p, c)] for c in CLASSES},
                             "groups": groups[p]} for p in PARTS}
    return out


def format_summary(s: dict) -> str:
    lines = [f"{s['n_images']} images in {s['n_groups']} pseudo-patient groups "
             f"(groups per class: {s['groups_per_class']})"]
    for protocol in ("paper", "grouped"):
        for p in PARTS:
            imgs = s[protocol][p]["images"]
            lines.append(f"  {protocol:<8}{p:<6}{sum(imgs.values()):>5} images "
                         f"({', '.join(f'{c} {imgs[c]}' for c in CLASSES)}), "
                         f"{s[protocol][p]['groups']} groups")
    return "\n".join(lines)
