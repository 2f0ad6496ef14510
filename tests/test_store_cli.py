"""The ``dartboost store`` command line (through ``dartboost.store.cli.main``)."""
import argparse
import io
import shutil

import numpy as np
import pytest

from dartboost.store import ModelStore, save
from dartboost.store.cli import add_store_parser, main, run_store
from store_fixtures import local_locations, sample_arrays


@pytest.fixture
def locs(tmp_path):
    return local_locations(tmp_path / "store", 4)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_put_ls_get_verify_repair(capsys, locs, tmp_path):
    model = tmp_path / "m.dbm"
    save(sample_arrays(0), model)
    L = ",".join(locs)
    code, out, _ = run(capsys, "--loc", L, "-k", "2", "-r", "2", "put", "model", str(model))
    assert code == 0 and "stored 'model' version 1" in out and "2+2 shards" in out
    code, out, _ = run(capsys, "--loc", L, "ls")
    assert code == 0 and "model" in out and "latest v1" in out and "arrays" in out
    code, out, _ = run(capsys, "--loc", L, "ls", "model")
    assert code == 0 and out.splitlines()[1].split()[0] == "1"
    shutil.rmtree(locs[0])
    shutil.rmtree(locs[3])
    code, out, _ = run(capsys, "--loc", L, "verify")
    assert code == 1 and "missing" in out and "repair" in out
    got = tmp_path / "got.dbm"
    code, out, _ = run(capsys, "--loc", L, "get", "model", "-o", str(got))
    assert code == 0 and got.read_bytes() == model.read_bytes()
    code, out, _ = run(capsys, "--loc", L, "repair")
    assert code == 0 and "repaired" in out
    code, out, _ = run(capsys, "--loc", L, "verify")
    assert code == 0 and "all shards healthy" in out
    code, out, _ = run(capsys, "--loc", L, "rm", "model")
    assert code == 0 and ModelStore(locs).list() == []


def test_clear_errors(capsys, locs, tmp_path, monkeypatch):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"\x00" * 100)
    L = ",".join(locs)
    monkeypatch.delenv("DARTBOOST_STORE", raising=False)
    code, _, err = run(capsys, "ls")
    assert code == 2 and "no store locations" in err
    code, _, err = run(capsys, "--loc", L, "ls")
    assert code == 2 and "pass k and r" in err
    assert run(capsys, "--loc", L, "-k", "2", "-r", "2", "put", "b", str(f))[0] == 0
    code, _, err = run(capsys, "--loc", L, "-k", "3", "-r", "1", "ls")
    assert code == 2 and "created with k=2, r=2" in err
    code, _, err = run(capsys, "--loc", L, "get", "../etc")
    assert code == 2 and "outside the store root" in err
    code, _, err = run(capsys, "--loc", L, "get", "nothing")
    assert code == 2 and "no object named 'nothing'" in err
    for i in range(3):
        shutil.rmtree(locs[i])
    code, _, err = run(capsys, "--loc", L, "get", "b", "-o", str(tmp_path / "x"))
    assert code == 2 and "more than r=2 bad shards" in err
    code, out, _ = run(capsys, "--loc", L, "verify")
    assert code == 2 and "UNRECOVERABLE" in out
    monkeypatch.setenv("DARTBOOST_STORE", L)
    code, _, err = run(capsys, "put", "c", str(tmp_path / "does-not-exist"))
    assert code == 2 and "does-not-exist" in err


def test_add_store_parser_hook(locs, tmp_path):
    """The hook the main ``dartboost`` CLI uses."""
    parser = argparse.ArgumentParser(prog="dartboost")
    sub = parser.add_subparsers(dest="command")
    add_store_parser(sub)
    f = tmp_path / "w.bin"
    f.write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    args = parser.parse_args(["store", "--loc", ",".join(locs), "-k", "3", "-r", "1",
                              "put", "w", str(f)])
    out = io.StringIO()
    assert args.func(args, out) == 0 and "stored 'w'" in out.getvalue()
    assert run_store(parser.parse_args(["store", "--loc", ",".join(locs), "ls"]), out) == 0
    assert ModelStore(locs).get("w") == f.read_bytes()
