"""``python -m dartboost demo``: DART vs MART on data sets shipped with scikit-learn."""
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import train_test_split

from .estimators import DartClassifier, DartRegressor


def _tasks():
    # (name, loader, kind, metric name, metric, higher is better)
    rmse = lambda y, p: float(np.sqrt(mean_squared_error(y, p)))  # noqa: E731
    auc = lambda y, p: float(roc_auc_score(y, p[:, 1]))  # noqa: E731
    acc = lambda y, p: float(accuracy_score(y, p.argmax(axis=1)))  # noqa: E731
    return [
        ("breast_cancer", load_breast_cancer, "clf", "AUC", auc),
        ("digits", load_digits, "clf", "accuracy", acc),
        ("diabetes", load_diabetes, "reg", "RMSE", rmse),
    ]


def _models(kind, seed, n_estimators):
    common = dict(n_estimators=n_estimators, learning_rate=0.1, early_stopping=False,
                  random_state=seed,
                  min_samples_leaf=10)
    if kind == "clf":
        return [
            ("dartboost DART", DartClassifier(boosting="dart", **common)),
            ("dartboost MART", DartClassifier(boosting="mart", **common)),
            ("sklearn HGB", HistGradientBoostingClassifier(
                max_iter=n_estimators, learning_rate=0.1, early_stopping=False, random_state=seed,
                min_samples_leaf=10)),
        ]
    return [
        ("dartboost DART", DartRegressor(boosting="dart", **common)),
        ("dartboost MART", DartRegressor(boosting="mart", **common)),
        ("sklearn HGB", HistGradientBoostingRegressor(
            max_iter=n_estimators, learning_rate=0.1, early_stopping=False, random_state=seed,
            min_samples_leaf=10)),
    ]


def run_demo(seed=0, n_estimators=100, out=print):
    """Fit DART, MART and scikit-learn's HistGradientBoosting on three bundled
    data sets and print test metrics and fit times. Returns the rows."""
    rows = []
    for name, loader, kind, metric_name, metric in _tasks():
        X, y = loader(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=0.25, random_state=seed, stratify=y if kind == "clf" else None)
        for model_name, model in _models(kind, seed, n_estimators):
            start = time.perf_counter()
            model.fit(X_tr, y_tr)
            fit_s = time.perf_counter() - start
            pred = model.predict_proba(X_te) if kind == "clf" else model.predict(X_te)
            rows.append((name, model_name, metric_name, metric(y_te, pred), fit_s))
    out(f"{'data set':<14} {'model':<16} {'metric':<9} {'test':>8} {'fit s':>7}")
    out("-" * 58)
    for name, model_name, metric_name, value, fit_s in rows:
        out(f"{name:<14} {model_name:<16} {metric_name:<9} {value:>8.4f} {fit_s:>7.2f}")
    out(f"\n{n_estimators} iterations, learning rate 0.1, 31 leaves; DART: drop_rate 0.1, "
        "skip_drop 0.5; 25% of each data set held out.")
    return rows
