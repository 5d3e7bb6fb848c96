"""One config source: ``params.yaml``, shared by DVC stages, the CLI and the app.

Why a plain nested dict: DVC reads the same YAML keys directly (``params:`` in
dvc.yaml), so keeping the structure 1:1 with the file avoids a second schema.
Presets (``presets:`` in the file) and ``key.sub=value`` overrides are merged on
top, and the environment variables in ``ENV_OVERRIDES`` win over all of them:
this module is the only place that reads them (``LUNGCT_PARAMS`` chooses the
file itself). Names and places shared by several modules live here too: the
models folder (``models_dir``) and the reports folder (``report_path``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"
"""The shipped example slices (public data, credited in samples/README.md)."""
"""The checkout root; relative paths in params.yaml are relative to it."""


ENV_OVERRIDES = {
    "LUNGCT_DATA": ("data", "root"),
    "LUNGCT_EXTERNAL": ("data", "external"),
    "LUNGCT_MODELS": ("paths", "models"),
    "LUNGCT_BACKEND": ("runtime", "backend"),
    "LUNGCT_PRECISION": ("runtime", "precision"),
    "MLFLOW_TRACKING_URI": ("tracking", "mlflow_uri"),
}
"""Environment variable -> the config entry it replaces (applied by ``load_config``)."""


def params_path() -> Path:
    """Where params.yaml lives: ``LUNGCT_PARAMS`` or the repository root."""
    return Path(os.environ.get("LUNGCT_PARAMS", REPO_ROOT / "params.yaml"))


def _tree_copy(node: Any) -> Any:
    """A private copy of parsed YAML (dicts, lists, immutable scalars): what
    ``copy.deepcopy`` gives, about 3x faster (it is on every case's path)."""
    if isinstance(node, dict):
        return {k: _tree_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_tree_copy(v) for v in node]
    return node


def _deep_merge(base: dict, extra: dict) -> dict:
    out = _tree_copy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = _tree_copy(value)
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
    cfg = _tree_copy(cfg)
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


_PARSED: dict[tuple, dict] = {}


def _read_params(path: Path) -> dict:
    """The parsed YAML file, a private copy: parsed once per (file, size, mtime).

    Parsing params.yaml takes about 25 ms; the case pipeline asks for its limits on
    every call, and one slice through it takes less than that.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        with open(path, encoding="utf-8") as fh:
            _PARSED.clear()     # one file in use at a time: keep only the latest
            _PARSED[key] = yaml.safe_load(fh) or {}
    return _tree_copy(_PARSED[key])


def load_config(path: str | Path | None = None, preset: str | None = None,
                overrides: Iterable[str] = ()) -> dict:
    """Read params.yaml, merge a preset and overrides, apply environment variables.

    >>> cfg = load_config(preset="smoke")
    >>> cfg["preprocess"]["image_size"]
    64
    """
    path = Path(path) if path else params_path()
    cfg = _read_params(path)
    presets = cfg.pop("presets", {}) or {}
    if preset:
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(presets)}")
        cfg = _deep_merge(cfg, presets[preset])
    cfg = apply_overrides(cfg, overrides)
    for variable, (section, key) in ENV_OVERRIDES.items():
        if os.environ.get(variable):
            cfg.setdefault(section, {})[key] = os.environ[variable]
    return cfg


def config_options() -> argparse.ArgumentParser:
    """The options every command takes, read by ``config_from_args``: params, preset, overrides.

    A parent parser (``parents=[config_options()]``). An option not given is
    left out of the namespace, so a verb (``guard fit``) can repeat the options
    without wiping what was given before it (``guard --params X fit``).
    """
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--params", help="params.yaml to read (default: the repository's)")
    common.add_argument("--preset", help="a preset from params.yaml, e.g. paper or smoke")
    common.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set train.epochs=3")
    return common


def config_from_args(args) -> dict:
    """The config a command line asks for: ``--params``, ``--preset`` and ``--set`` flags."""
    return load_config(getattr(args, "params", None), getattr(args, "preset", None),
                       getattr(args, "set", None) or ())


def resolve(path: str | Path) -> Path:
    """Resolve a path from params.yaml against the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def models_dir(cfg: dict | None = None) -> Path:
    """The folder of model folders: ``paths.models`` (``LUNGCT_MODELS``), else ``models/``.

    Read at each call (``load_config()`` when no config is given), so tests and
    private deployments can point elsewhere without restarting Python.
    """
    cfg = load_config() if cfg is None else cfg
    return resolve((cfg.get("paths") or {}).get("models") or "models")


LEAKAGE_REPORT = "leakage.json"
"""``python -m lungct lab leakage``'s report, in the reports folder."""


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
