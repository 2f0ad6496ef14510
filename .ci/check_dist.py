"""Check the release artifacts: the sdist holds exactly the git-tracked sources
(no generated C), the wheel holds the compiled kernels and no sources to build.

Usage: python .ci/check_dist.py DIST_DIR [WHEELHOUSE]  (the repaired wheel, if given)
"""
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def main(dist, wheelhouse=None):
    dist = Path(dist)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = Path(wheelhouse or dist).glob("*.whl")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    tracked = set(subprocess.run(["git", "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.split())
    files = {n for n in names if not n.endswith("/") and n != "PKG-INFO"}
    dirs = {str(Path(n).parent) for n in tracked}
    files -= dirs  # tar member names of folders
    problems = []
    if files - tracked:
        problems.append(f"sdist has untracked files: {sorted(files - tracked)[:10]}")
    if tracked - files:
        problems.append(f"sdist lacks tracked files: {sorted(tracked - files)[:10]}")
    if not any(n.endswith(".pyx") for n in files):
        problems.append("sdist has no .pyx sources")
    with zipfile.ZipFile(wheel) as zf:
        wnames = zf.namelist()
    if any(n.endswith((".c", ".cpp", ".pyx")) for n in wnames):
        problems.append("wheel contains C or Cython sources")
    kernels = [n for n in wnames if n.startswith("dartboost/_cext/") and n.endswith((".so", ".pyd"))]
    if not kernels:
        problems.append("wheel has no compiled kernels")
    top = {n.split("/", 1)[0] for n in wnames}
    if top - {"dartboost", "dartboost.libs", wheel.name.split("-")[0] + "-" +
              wheel.name.split("-")[1] + ".dist-info"}:
        problems.append(f"wheel installs unexpected top-level names: {sorted(top)}")
    if wheelhouse and not any(n.startswith("dartboost.libs/") and "gomp" in n for n in wnames):
        problems.append("repaired wheel does not vendor libgomp")
    if problems:
        sys.exit("release check failed:\n  " + "\n  ".join(problems))
    print(f"release check ok: {sdist.name} ({len(files)} files), {wheel.name} "
          f"({len(kernels)} compiled kernels)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
