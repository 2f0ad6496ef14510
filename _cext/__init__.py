"""Compiled hot loops of dartboost (Cython, OpenMP, nogil).

Only kernels live here; everything that decides *what* to compute lives in the
pure-Python modules of :mod:`dartboost`.
"""
