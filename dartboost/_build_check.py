"""Say clearly when dartboost is imported without its compiled kernels.

The kernels live in ``_cext/`` of the source tree and are installed as
``dartboost._cext``; a source checkout has no ``dartboost/_cext`` until it is
built, so importing from the repository root would otherwise end in a bare
``ModuleNotFoundError`` deep inside the estimators (scikit-learn raises a
similar explanatory error for the same reason).
"""
from importlib import metadata, util
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _in_source_tree():
    root = _PACKAGE_DIR.parent
    return (root / "meson.build").is_file() and (root / "_cext").is_dir()


def check_built():
    """Raise an ``ImportError`` that says what to do if the kernels are missing."""
    try:
        if util.find_spec("dartboost._cext._predictor") is not None:
            return
    except ModuleNotFoundError:  # no dartboost._cext package at all
        pass
    if _in_source_tree():
        raise ImportError(
            f"dartboost is being imported from its source tree ({_PACKAGE_DIR.parent}), "
            "where the compiled kernels (dartboost._cext) do not exist. Install it first: "
            "`pip install .` (users) or `pip install --no-build-isolation -e .` "
            "(contributors, see docs/contributing.md), and run Python from another "
            "folder, or use the editable install, which takes precedence over the "
            "source tree."
        )
    raise ImportError(
        f"dartboost's compiled kernels (dartboost._cext) are missing from {_PACKAGE_DIR}: "
        "this installation is incomplete (a wheel built without its extensions?). "
        "Reinstall with `pip install --force-reinstall dartboost`."
    )


def _version():
    try:
        return metadata.version("dartboost")
    except metadata.PackageNotFoundError:  # imported from a build folder, not installed
        return "0+unknown"


check_built.version = _version
