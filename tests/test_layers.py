"""The import contracts in ``.importlinter`` hold: layers only import downwards, no cycles.

A new module must be placed in a layer (the layers contract is exhaustive).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


@pytest.mark.parametrize("contract", ["layers", "acyclic"])
def test_import_contract_holds(contract, capsys):
    from importlinter.cli import lint_imports
    code = lint_imports(config_filename=str(CONFIG), limit_to_contracts=(contract,),
                        no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out[-4000:]


def test_readme_names_every_module():
    """The README's layout names each module (as `name`, name.py, name/ or pkg/name)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = []
    for path in sorted((ROOT / "lungct").rglob("*.py")):
        name = path.stem
        if name == "__init__":
            continue
        forms = (f"`{name}`", f"{name}.py", f"{name}/", f"/{name}`", f"`{name} ")
        if not any(f in readme for f in forms):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README layout does not name: {missing}"
