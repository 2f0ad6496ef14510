"""The command line: demo, fit and predict on CSV files, and its errors."""
import csv
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
    with pytest.raises(SystemExit, match="target column 'nope'"):
        main(["fit", str(path), "--target", "nope", "--model", str(model)])
    with pytest.raises(SystemExit, match="unknown column"):
        main(["fit", str(path), "--target", "y", "--drop", "zzz", "--model", str(model)])
    _write_csv(tmp_path / "p.csv", ["x1", "x3"], [[1, 2]])
    with pytest.raises(SystemExit, match=r"no column\(s\) \['x2'\]"):
        main(["predict", str(tmp_path / "p.csv"), "--model", str(model)])
    _write_csv(tmp_path / "bad.csv", ["x1", "x2", "x3", "y"], [[1, "abc", 2, 3]])
    with pytest.raises(SystemExit, match="non-numeric"):
        main(["fit", str(tmp_path / "bad.csv"), "--target", "y", "--model", str(model)])
    (tmp_path / "junk.dbm").write_bytes(b"not a model")
    with pytest.raises(SystemExit, match="not a valid dartboost model"):
        main(["predict", str(path), "--model", str(tmp_path / "junk.dbm")])
    with pytest.raises(SystemExit, match="cannot read"):
        main(["predict", str(path), "--model", str(tmp_path / "missing.dbm")])


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
