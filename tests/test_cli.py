"""The command line: demo, fit and predict on CSV files, and its errors."""
import csv
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from dartboost.cli import main
from dartboost._demo import run_demo


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def clf_csv(tmp_path):
    X, y = make_classification(400, 4, random_state=0)
    labels = np.where(y == 1, "yes", "no")
    rows = [[i, *x, lab] for i, (x, lab) in enumerate(zip(X, labels))]
    rows[3][2] = ""  # a missing value
    path = tmp_path / "train.csv"
    _write_csv(path, ["id", "a", "b", "c", "d", "label"], rows)
    return path, labels


def test_fit_and_predict_classification(tmp_path, clf_csv, capsys):
    train, labels = clf_csv
    model = tmp_path / "model.dbm"
    assert main(["fit", str(train), "--target", "label", "--drop", "id", "--model", str(model),
                 "--n-estimators", "15"]) == 0
    assert "classification" in capsys.readouterr().out
    out = tmp_path / "pred.csv"
    assert main(["predict", str(train), "--model", str(model), "-o", str(out)]) == 0
    with open(out) as f:
        pred = [row[0] for row in csv.reader(f)][1:]
    assert len(pred) == 400
    assert np.mean(np.array(pred) == labels) > 0.85
    assert main(["predict", str(train), "--model", str(model), "--proba"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "proba_no,proba_yes" and len(lines) == 401


def test_fit_regression_and_errors(tmp_path, capsys):
    X, y = make_regression(300, 3, random_state=0)
    path = tmp_path / "r.csv"
    _write_csv(path, ["x1", "x2", "x3", "y"], [[*x, t] for x, t in zip(X, y)])
    model = tmp_path / "r.dbm"
    assert main(["fit", str(path), "--target", "y", "--model", str(model), "--boosting", "mart",
                 "--n-estimators", "10"]) == 0
    assert "regression" in capsys.readouterr().out
    def fails(argv, code, match):
        assert main(argv) == code
        assert re.search(match, capsys.readouterr().err)

    fails(["fit", str(path), "--target", "nope", "--model", str(model)], 1, "target column 'nope'")
    fails(["fit", str(path), "--target", "y", "--drop", "zzz", "--model", str(model)], 1,
          "unknown column")
    _write_csv(tmp_path / "p.csv", ["x1", "x3"], [[1, 2]])
    fails(["predict", str(tmp_path / "p.csv"), "--model", str(model)], 1,
          r"no column\(s\) \['x2'\]")
    (tmp_path / "junk.dbm").write_bytes(b"not a model")
    fails(["predict", str(path), "--model", str(tmp_path / "junk.dbm")], 1,
          "not a valid dartboost model")
    fails(["predict", str(path), "--model", str(tmp_path / "missing.dbm")], 1, "cannot read")


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "dartboost", "fit", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for opt in ("--target", "--model", "--drop", "--boosting", "--drop-rate", "--skip-drop",
                "--max-drop", "--n-estimators", "--learning-rate", "--early-stopping"):
        assert opt in out


def test_demo_prints_a_table():
    lines = []
    rows = run_demo(n_estimators=5, out=lines.append)
    assert len(rows) == 9
    assert {r[1] for r in rows} == {"dartboost DART", "dartboost MART", "sklearn HGB"}
    assert all(np.isfinite(r[3]) for r in rows)
    assert "breast_cancer" in "\n".join(lines)


# ------------------------------------------------- findings of issue 14 (item 7)
def _airquality_like(path, n=153, n_missing=37):
    """Like R's airquality: an integer target ``Ozone`` with 37 empty cells and
    more than 20 distinct values."""
    rng = np.random.default_rng(0)
    temp = rng.uniform(55, 95, n)
    wind = rng.uniform(2, 20, n)
    ozone = np.round(np.clip(3 * (temp - 50) - 2 * wind + rng.normal(0, 8, n), 1, None)).astype(int)
    cells = [str(v) for v in ozone]
    for i in rng.choice(n, n_missing, replace=False):
        cells[i] = ""
    _write_csv(path, ["Ozone", "Temp", "Wind"], [[o, t, w] for o, t, w in zip(cells, temp, wind)])


def test_missing_numeric_target_is_dropped_and_regression(tmp_path, capsys):
    _airquality_like(tmp_path / "airquality.csv")
    model = tmp_path / "m.dbm"
    assert main(["fit", str(tmp_path / "airquality.csv"), "--target", "Ozone", "--model",
                 str(model), "--n-estimators", "5"]) == 0
    out = capsys.readouterr()
    assert "regression" in out.out
    assert "dropped 37 of 153 rows whose target 'Ozone' is missing" in out.err
    from dartboost.store import load
    assert type(load(model)).__name__ == "DartRegressor"


def test_na_string_target_never_becomes_a_class(tmp_path, capsys):
    X, y = make_classification(200, 4, random_state=0)
    labels = np.where(y == 1, "yes", "no").astype(object)
    labels[::10] = "NA"
    _write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "label"],
               [[*x, lab] for x, lab in zip(X, labels)])
    model = tmp_path / "m.dbm"
    assert main(["fit", str(tmp_path / "t.csv"), "--target", "label", "--model", str(model),
                 "--n-estimators", "5"]) == 0
    assert "dropped 20 of 200 rows" in capsys.readouterr().err
    from dartboost.store import load
    assert load(model).classes_.tolist() == ["no", "yes"]


def test_model_folder_is_checked_before_fitting(tmp_path, clf_csv, capsys):
    train, _ = clf_csv
    target = tmp_path / "no" / "such" / "m.dbm"
    assert main(["fit", str(train), "--target", "label", "--model", str(target)]) == 2
    out = capsys.readouterr()
    assert "does not exist" in out.err and "fitted" not in out.out
    assert main(["predict", str(train), "--model", str(target), "-o",
                 str(tmp_path / "nope" / "p.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("opener,suffix", [("gzip", ".gz"), ("bz2", ".bz2"), ("lzma", ".xz")])
def test_compressed_csv(tmp_path, clf_csv, capsys, opener, suffix):
    import importlib
    train, _ = clf_csv
    packed = tmp_path / ("train.csv" + suffix)
    packed.write_bytes(importlib.import_module(opener).compress(train.read_bytes()))
    assert main(["fit", str(packed), "--target", "label", "--drop", "id", "--model",
                 str(tmp_path / "m.dbm"), "--n-estimators", "3"]) == 0
    assert "400 rows" in capsys.readouterr().out


def test_corrupt_or_binary_input_is_a_runtime_error(tmp_path, capsys):
    (tmp_path / "bad.csv.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    assert main(["fit", str(tmp_path / "bad.csv.gz"), "--target", "y", "--model",
                 str(tmp_path / "m.dbm")]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "latin1.csv").write_bytes("a,y\n\xe9,1\n".encode("latin-1"))
    assert main(["fit", str(tmp_path / "latin1.csv"), "--target", "y", "--model",
                 str(tmp_path / "m.dbm")]) == 1
    assert "not UTF-8" in capsys.readouterr().err


def test_separator(tmp_path, capsys):
    X, y = make_regression(100, 2, random_state=0)
    for sep, flag in ((";", ";"), ("\t", "tab")):
        path = tmp_path / "s.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f, delimiter=sep)
            w.writerow(["u", "v", "y"])
            w.writerows([[*x, t] for x, t in zip(X, y)])
        assert main(["fit", str(path), "--sep", flag, "--target", "y", "--model",
                     str(tmp_path / "m.dbm"), "--n-estimators", "3"]) == 0
        assert "2 features" in capsys.readouterr().out
        assert main(["predict", str(path), "--sep", flag, "--model", str(tmp_path / "m.dbm")]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 101
    # the wrong separator: one column only, with a hint
    assert main(["fit", str(path), "--target", "y", "--model", str(tmp_path / "m.dbm")]) == 1
    assert "see --sep" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(path), "--sep", "ab", "--target", "y", "--model", "m.dbm"])
    assert exc.value.code == 2


def test_param_is_typed_and_validated(tmp_path, clf_csv, capsys):
    train, _ = clf_csv
    model = tmp_path / "m.dbm"
    assert main(["fit", str(train), "--target", "label", "--drop", "id", "--model", str(model),
                 "--n-estimators", "3", "--param", "max_depth=3", "--param",
                 "normalize_type=forest", "--param", "one_drop=true", "--param",
                 "max_leaf_nodes=none", "--param", "l2_regularization=0.5"]) == 0
    from dartboost.store import load
    est = load(model)
    assert est.max_depth == 3 and isinstance(est.max_depth, int)
    assert est.normalize_type == "forest" and est.one_drop is True
    assert est.max_leaf_nodes is None and est.l2_regularization == 0.5
    capsys.readouterr()
    for bad, msg in (("bogus=1", "not an estimator parameter"),
                     ("max_depth=-1", "max_depth"),
                     ("learning_rate=fast", "learning_rate"),
                     ("loss=huber", "do not apply to a DartClassifier"),
                     ("novalue", "key=value")):
        assert main(["fit", str(train), "--target", "label", "--model", str(model),
                     "--param", bad]) == 2, bad
        assert msg in capsys.readouterr().err


def test_exit_codes_and_version(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "dartboost", *a],  # noqa: E731
                                    capture_output=True, text=True)
    from dartboost import __version__
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"dartboost {__version__}"
    assert run("fit", "--task", "nonsense", "x.csv").returncode == 2   # argparse usage error
    res = run("fit", str(tmp_path / "missing.csv"), "--target", "y", "--model",
              str(tmp_path / "m.dbm"))
    assert res.returncode == 1 and "Traceback" not in res.stderr and "no such file" in res.stderr


def test_broken_pipe_ends_quietly(tmp_path):
    """``dartboost predict ... | head`` used to end in a BrokenPipeError traceback."""
    X, y = make_regression(20000, 2, random_state=0)
    path = tmp_path / "big.csv"
    _write_csv(path, ["u", "v", "y"], [[*x, t] for x, t in zip(X[:300], y[:300])])
    assert main(["fit", str(path), "--target", "y", "--model", str(tmp_path / "m.dbm"),
                 "--n-estimators", "3"]) == 0
    _write_csv(path, ["u", "v"], X.tolist())
    proc = subprocess.Popen([sys.executable, "-m", "dartboost", "predict", str(path), "--model",
                             str(tmp_path / "m.dbm")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"predicted_y")
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_string_csv_columns_become_categories(tmp_path, capsys):
    # text columns used to be refused ("non-numeric"); now they are categorical
    rng = np.random.default_rng(0)
    cities = np.array(["oslo", "lima", "rome", "kyiv", "baku", "doha"])
    c = rng.integers(0, cities.size, 600)
    x = rng.normal(size=600)
    y = np.where(np.isin(c, [1, 3, 4]), 5.0, 0.0) + x
    rows = [[cities[ci] if i % 50 else "", round(xi, 4), round(yi, 4)]
            for i, (ci, xi, yi) in enumerate(zip(c, x, y))]
    _write_csv(tmp_path / "train.csv", ["city", "x", "y"], rows)
    model = tmp_path / "m.dbm"
    assert main(["fit", str(tmp_path / "train.csv"), "--target", "y", "--model", str(model),
                 "--task", "regression", "--n-estimators", "30",
                 "--param", "min_data_per_group=10"]) == 0
    capsys.readouterr()
    # predict: an unseen city, a missing one, and a city column that looks numeric
    _write_csv(tmp_path / "new.csv", ["city", "x"],
               [["lima", 0.0], ["oslo", 0.0], ["paris", 0.0], ["", 0.0]])
    out = tmp_path / "pred.csv"
    assert main(["predict", str(tmp_path / "new.csv"), "--model", str(model),
                 "--output", str(out)]) == 0
    pred = np.loadtxt(out, delimiter=",", skiprows=1)
    assert pred[0] - pred[1] > 3.0  # lima is a high city, oslo a low one
    assert np.all(np.isfinite(pred))
