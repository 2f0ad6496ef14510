"""Every ```python block of docs/*.md runs on its own, in a fresh interpreter.

A block is skipped (not failed) when it imports an optional package that is
not installed, or needs a GPU and none is visible. KNOWN_FAILING lists blocks
of pages owned elsewhere that do not run on their own yet, by a hash of the
block's text: they are skipped until their owners fix them (a changed block
has a new hash, so a fixed block runs again without touching this list).
"""
import ast
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)

#: page -> {sha1(block)[:12]: why} of blocks that do not run on their own today
#: (all need names defined by an earlier block of their page).
KNOWN_FAILING = {}

#: imports that mean "needs a CUDA device".
_GPU_MODULES = {"torch", "triton", "dartboost.gpu"}


def _blocks():
    for page in sorted(DOCS.glob("*.md")):
        for i, match in enumerate(_BLOCK.finditer(page.read_text(encoding="utf-8"))):
            yield pytest.param(page.name, i, match.group(1), id=f"{page.name}-{i}")


def _imported_modules(code):
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@lru_cache(maxsize=None)
def _cuda_available():
    if importlib.util.find_spec("torch") is None:
        return False
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _skip_reason(code):
    modules = _imported_modules(code)
    for name in sorted(modules):
        top = name.split(".")[0]
        if top != "dartboost" and importlib.util.find_spec(top) is None:
            return f"needs the optional package {top!r}"
    needs_gpu = any(m == g or m.startswith(g + ".") for m in modules for g in _GPU_MODULES)
    if needs_gpu and ("cuda" in code or "dartboost.gpu" in code) and not _cuda_available():
        return "needs a CUDA device"
    return None


@pytest.mark.parametrize("page,index,code", list(_blocks()))
def test_doc_block_runs_on_its_own(page, index, code, tmp_path):
    digest = hashlib.sha1(code.encode()).hexdigest()[:12]
    if digest in KNOWN_FAILING.get(page, {}):
        pytest.skip(f"known to need an earlier block: {KNOWN_FAILING[page][digest]}")
    reason = _skip_reason(code)
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, f"{page} block {index} failed:\n{res.stderr[-3000:]}"
