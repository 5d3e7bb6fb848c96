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
