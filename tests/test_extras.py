"""A missing optional dependency raises an ImportError naming the extra that installs it."""

import sys

import numpy as np
import pytest

from dt_fast.extras import EXTRAS, require


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_missing_module_names_its_extra(monkeypatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    extra, package = EXTRAS[module]
    with pytest.raises(ImportError, match=rf"^Hopper-v4 needs {package}: pip install 'dt-fast\[{extra}\]'$"):
        require(module, "Hopper-v4")


def test_present_module_is_returned() -> None:
    assert require("numpy", "anything") is np


def test_unknown_module_is_not_translated() -> None:
    with pytest.raises(ModuleNotFoundError, match="No module named 'no_such_module'"):
        require("no_such_module", "x")


def test_missing_package_of_a_submodule_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    for name in [m for m in sys.modules if m.startswith("pyarrow.")]:  # imported by earlier tests
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"^x needs pyarrow: pip install 'dt-fast\[formats\]'$"):
        require("pyarrow.parquet", "x")


def test_import_error_inside_an_installed_module_propagates(monkeypatch, tmp_path) -> None:
    (tmp_path / "broken_optional.py").write_text("import dependency_of_broken_optional\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRAS, "broken_optional", ("envs", "broken-optional"))
    with pytest.raises(ModuleNotFoundError, match="No module named 'dependency_of_broken_optional'"):
        require("broken_optional", "x")


def test_call_sites_name_the_extra(monkeypatch, tmp_path) -> None:
    from dt_fast.data.formats import load_minari, load_parquet
    from dt_fast.envs import env_spec
    from dt_fast.evaluation import plot_returns

    for module in ("envpool", "gymnasium", "pyarrow", "minari", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"Hopper-v4 needs gymnasium: pip install 'dt-fast\[envs\]'"):
        env_spec("Hopper-v4")
    with pytest.raises(ImportError, match=r"reading parquet needs pyarrow: pip install 'dt-fast\[formats\]'"):
        load_parquet(tmp_path / "d.parquet")
    with pytest.raises(ImportError, match=r"needs minari: pip install 'dt-fast\[formats\]'"):
        load_minari(tmp_path)
    with pytest.raises(ImportError, match=r"the return plot needs matplotlib: pip install 'dt-fast\[video\]'"):
        plot_returns([], tmp_path / "p.png")
