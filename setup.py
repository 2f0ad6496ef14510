"""Build script for the compiled parts of dartboost.

Project metadata lives in ``pyproject.toml``; this file only declares what
``pyproject.toml`` cannot: the package-directory mapping (``_cext/`` is installed
as ``dartboost._cext`` and ``gpu/`` as ``dartboost.gpu``) and the Cython
extensions, compiled with OpenMP so the hot loops run in parallel without the GIL.
"""
import os
import sys
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup


def _openmp_flags():
    # gcc/clang on Linux take -fopenmp; MSVC uses /openmp. DARTBOOST_NO_OPENMP=1
    # builds a serial engine for compilers without OpenMP support.
    if os.environ.get("DARTBOOST_NO_OPENMP"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


def _packages():
    pkgs = find_packages(include=["dartboost", "dartboost.*"])
    pkgs += ["dartboost._cext"]
    pkgs += ["dartboost.gpu" + p[len("gpu"):] for p in find_packages(include=["gpu", "gpu.*"])]
    return pkgs


def _package_dir():
    mapping = {"dartboost": "dartboost", "dartboost._cext": "_cext"}
    for p in find_packages(include=["gpu", "gpu.*"]):
        mapping["dartboost.gpu" + p[len("gpu"):]] = p.replace(".", "/")
    return mapping


compile_args, link_args = _openmp_flags()
opt = [] if sys.platform == "win32" else ["-O3"]
extensions = [
    Extension(
        "dartboost._cext." + os.path.splitext(os.path.basename(src))[0],
        [src],
        include_dirs=[np.get_include(), "_cext"],
        extra_compile_args=compile_args + opt,
        extra_link_args=link_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for src in sorted(glob("_cext/*.pyx"))
]

setup(
    packages=_packages(),
    package_dir=_package_dir(),
    package_data={"dartboost._cext": ["*.pxd"]},
    ext_modules=cythonize(
        extensions,
        include_path=["_cext"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
    zip_safe=False,
)
