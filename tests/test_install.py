"""The package as installed: one module identity for each part, a version, and
(when CI runs the suite against the installed wheel) no source-tree shadowing."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dartboost


def test_parts_are_subpackages_only():
    assert importlib.util.find_spec("dartboost._cext._predictor") is not None
    assert importlib.util.find_spec("dartboost.gpu") is not None
    # `gpu` and `_cext` are folders of the source tree, never top-level modules
    # of an installation (one file, one module identity).
    for name in ("gpu", "_cext"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" not in str(spec.origin), name


def test_version_is_the_metadata_version():
    from importlib import metadata
    assert dartboost.__version__ == metadata.version("dartboost")


@pytest.mark.skipif(os.environ.get("DARTBOOST_EXPECT_INSTALLED") != "1",
                    reason="only when the suite runs against an installed wheel")
def test_suite_runs_against_the_installed_package():
    here = Path(__file__).resolve().parents[1]
    assert here not in Path(dartboost.__file__).resolve().parents


def test_unbuilt_source_tree_gives_a_clear_import_error(tmp_path):
    # A copy of the pure-Python sources beside an (unbuilt) _cext folder and a
    # meson.build: what a fresh checkout looks like before `pip install`.
    import shutil
    src = Path(dartboost.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "dartboost",
                    ignore=shutil.ignore_patterns("_cext", "gpu", "__pycache__"))
    (tmp_path / "_cext").mkdir()
    (tmp_path / "meson.build").write_text("project('x')\n")
    code = "import sys; sys.meta_path[:] = [m for m in sys.meta_path if 'editable' not in type(m).__module__]\n" \
           "import dartboost"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "source tree" in proc.stderr
    assert "pip install" in proc.stderr
