"""One config source: ``params.yaml``, shared by DVC stages, the CLI and the app.

Why a plain nested dict: DVC reads the same YAML keys directly (``params:`` in
dvc.yaml), so keeping the structure 1:1 with the file avoids a second schema.
Presets (``presets:`` in the file) and ``key.sub=value`` overrides are merged on
top, and the environment variables ``LUNGCT_DATA`` and ``MLFLOW_TRACKING_URI``
win over the file for the data root and the tracking store.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout root; relative paths in params.yaml are relative to it."""


def params_path() -> Path:
    """Where params.yaml lives: ``LUNGCT_PARAMS`` or the repository root."""
    return Path(os.environ.get("LUNGCT_PARAMS", REPO_ROOT / "params.yaml"))


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_scalar(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = cfg
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_scalar(raw)
    return cfg


def load_config(path: str | Path | None = None, preset: str | None = None,
                overrides: Iterable[str] = ()) -> dict:
    """Read params.yaml, merge a preset and overrides, apply environment variables.

    >>> cfg = load_config(preset="smoke")
    >>> cfg["preprocess"]["image_size"]
    64
    """
    path = Path(path) if path else params_path()
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    presets = cfg.pop("presets", {}) or {}
    if preset:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(presets)}")
        cfg = _deep_merge(cfg, presets[preset])
    cfg = apply_overrides(cfg, overrides)
    if os.environ.get("LUNGCT_DATA"):
        cfg.setdefault("data", {})["root"] = os.environ["LUNGCT_DATA"]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        cfg.setdefault("tracking", {})["mlflow_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    return cfg


def config_from_args(args) -> dict:
    """The config a command line asks for: ``--params``, ``--preset`` and ``--set`` flags."""
    return load_config(getattr(args, "params", None), getattr(args, "preset", None),
                       getattr(args, "set", None) or ())


def resolve(path: str | Path) -> Path:
    """Resolve a path from params.yaml against the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


LEAKAGE_REPORT = "leakage.json"
"""``python -m lungct leakage``'s report, in the reports folder."""


def reports_dir(cfg: dict) -> Path:
    """The reports folder (``reports.dir``), resolved against the repository root."""
    return resolve((cfg.get("reports") or {}).get("dir", "reports"))


def report_path(cfg: dict, name: str) -> Path:
    """A report file in the reports folder: ``report_path(cfg, LEAKAGE_REPORT)``."""
    return reports_dir(cfg) / name


def model_config(cfg: dict, name: str) -> tuple[dict, str | None, str]:
    """The config of one shipped model: its ``models.NAME`` entry merged on top.

    Returns (config, teacher name or None, description). Names without an entry
    train with the plain config.
    """
    entry = dict((cfg.get("models") or {}).get(name) or {})
    teacher = entry.pop("teacher", None)
    description = entry.pop("description", "")
    return _deep_merge(cfg, entry), teacher, description
