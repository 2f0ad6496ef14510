"""Command line: ``dartboost demo|fit|predict|store|serve`` (also ``python -m dartboost``)."""
import argparse
import csv
import sys

import numpy as np


def _read_csv(path):
    """Header and rows of a CSV file, as lists of strings."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [row for row in reader if row]
    except OSError as exc:
        raise SystemExit(f"dartboost: error: cannot read {path!r}: {exc.strerror}")
    if not header:
        raise SystemExit(f"dartboost: error: {path!r} is empty (a header row is required)")
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise SystemExit(f"dartboost: error: {path!r} line {i} has {len(row)} fields, "
                             f"the header has {len(header)}")
    return header, rows


_MISSING = {"", "na", "nan", "null", "none", "?"}


def _to_float(values, column, path):
    """Parse a column; empty/NA cells become NaN (missing)."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        v = v.strip()
        if v.lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            raise SystemExit(f"dartboost: error: column {column!r} of {path!r} has a "
                             f"non-numeric value {v!r} (row {i + 2}); features must be numeric")
    return out


def _features(header, rows, columns, path):
    missing = [c for c in columns if c not in header]
    if missing:
        raise SystemExit(f"dartboost: error: {path!r} has no column(s) {missing}; "
                         f"its columns are {header}")
    idx = [header.index(c) for c in columns]
    return np.column_stack([_to_float([r[j] for r in rows], header[j], path) for j in idx]) \
        if rows else np.empty((0, len(columns)))


def _infer_task(target_values):
    try:
        y = np.array([float(v) for v in target_values])
    except ValueError:
        return "classification"
    if np.all(y == np.round(y)) and np.unique(y).size <= 20:
        return "classification"
    return "regression"


def _cmd_fit(args):
    from .estimators import DartClassifier, DartRegressor
    from .store import save

    header, rows = _read_csv(args.train)
    if args.target not in header:
        raise SystemExit(f"dartboost: error: target column {args.target!r} not in {args.train!r}; "
                         f"its columns are {header}")
    drop = set(args.drop or []) | {args.target}
    unknown = [c for c in (args.drop or []) if c not in header]
    if unknown:
        raise SystemExit(f"dartboost: error: --drop names unknown column(s) {unknown}")
    columns = [c for c in header if c not in drop]
    X = _features(header, rows, columns, args.train)
    target = [r[header.index(args.target)].strip() for r in rows]
    task = args.task if args.task != "auto" else _infer_task(target)
    params = dict(boosting=args.boosting, n_estimators=args.n_estimators,
                  learning_rate=args.learning_rate, max_leaf_nodes=args.max_leaf_nodes,
                  min_samples_leaf=args.min_samples_leaf, drop_rate=args.drop_rate,
                  skip_drop=args.skip_drop, max_drop=args.max_drop,
                  early_stopping=args.early_stopping, random_state=args.random_state,
                  n_jobs=args.n_jobs, verbose=args.verbose)
    if task == "classification":
        y = np.array(target)
        try:  # numeric labels stay numeric
            y = y.astype(np.float64)
            if np.all(y == np.round(y)):
                y = y.astype(np.int64)
        except ValueError:
            pass
        model = DartClassifier(**params)
    else:
        y = _to_float(target, args.target, args.train)
        model = DartRegressor(loss=args.loss, **params)
    model.fit(X, y)
    save(model, args.model, metadata={"feature_columns": columns, "target": args.target,
                                      "task": task})
    print(f"fitted a {task} model ({type(model).__name__}, boosting={args.boosting}, "
          f"{model.n_iter_} iterations) on {X.shape[0]} rows x {X.shape[1]} features; "
          f"saved to {args.model}")
    return 0


def _load_model_file(path):
    from .store import FormatError, load
    from .store._format import loads_state

    try:
        with open(path, "rb") as f:
            blob = f.read()
        meta = loads_state(blob)[0].get("metadata", {})
        model = load(path)
    except OSError as exc:
        raise SystemExit(f"dartboost: error: cannot read model {path!r}: {exc.strerror}")
    except (FormatError, ValueError) as exc:
        raise SystemExit(f"dartboost: error: {path!r} is not a valid dartboost model: {exc}")
    return model, meta


def _cmd_predict(args):
    model, meta = _load_model_file(args.model)
    header, rows = _read_csv(args.data)
    columns = meta.get("feature_columns")
    if columns is None:
        raise SystemExit("dartboost: error: the model file does not record its feature columns "
                         "(it was not written by `dartboost fit`)")
    X = _features(header, rows, columns, args.data)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(out)
        if args.proba:
            if not hasattr(model, "predict_proba"):
                raise SystemExit("dartboost: error: --proba needs a classification model")
            proba = model.predict_proba(X)
            writer.writerow([f"proba_{c}" for c in model.classes_])
            writer.writerows(proba.tolist())
        else:
            writer.writerow([f"predicted_{meta.get('target', 'target')}"])
            writer.writerows([[v] for v in model.predict(X).tolist()])
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0


def _cmd_demo(args):
    from ._demo import run_demo
    run_demo(seed=args.seed)
    return 0


def _add_model_options(p):
    g = p.add_argument_group("model options")
    g.add_argument("--task", choices=["auto", "regression", "classification"], default="auto",
                   help="auto: classification if the target is non-numeric or has at most 20 "
                        "distinct integer values, else regression (default: auto)")
    g.add_argument("--boosting", choices=["dart", "mart"], default="dart",
                   help="dart: dropout boosting; mart: plain gradient boosting (default: dart)")
    g.add_argument("--loss", default="squared_error",
                   choices=["squared_error", "absolute_error", "huber", "poisson"],
                   help="regression loss (default: squared_error)")
    g.add_argument("--n-estimators", type=int, default=100,
                   help="boosting iterations (default: 100)")
    g.add_argument("--learning-rate", type=float, default=0.1, help="shrinkage (default: 0.1)")
    g.add_argument("--max-leaf-nodes", type=int, default=31, help="leaves per tree (default: 31)")
    g.add_argument("--min-samples-leaf", type=int, default=20,
                   help="minimum rows in a leaf (default: 20)")
    g.add_argument("--drop-rate", type=float, default=0.1,
                   help="DART: probability of dropping each earlier iteration (default: 0.1)")
    g.add_argument("--skip-drop", type=float, default=0.5,
                   help="DART: probability of dropping nothing in an iteration (default: 0.5)")
    g.add_argument("--max-drop", type=int, default=50,
                   help="DART: most iterations dropped at once; <=0 no limit (default: 50)")
    g.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=False,
                   help="hold out 10%% of rows and stop when the loss stops improving "
                        "(default: off)")
    g.add_argument("--random-state", type=int, default=0, help="seed (default: 0)")
    g.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    g.add_argument("--verbose", type=int, default=0, help="1: progress bar; 2: per-iteration log")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dartboost",
        description="Gradient-boosted trees with DART and MART, coded serving and an "
                    "erasure-coded model store.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="fit DART and MART on bundled data sets, print a table",
                       description="Fit DART, MART and scikit-learn's HistGradientBoosting on "
                                   "data sets that ship with scikit-learn and print test "
                                   "metrics and fit times.")
    p.add_argument("--seed", type=int, default=0, help="train/test split and model seed")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("fit", help="fit a model on a CSV file and save it",
                       description="Fit a DART/MART model on a CSV file with a header row. "
                                   "All columns but the target (and --drop) are features; "
                                   "empty or NA cells are missing values.")
    p.add_argument("train", help="training CSV file (header row required)")
    p.add_argument("--target", required=True, help="name of the target column")
    p.add_argument("--model", required=True, help="output model file (dartboost format)")
    p.add_argument("--drop", action="append", metavar="COLUMN",
                   help="column to ignore (repeatable), e.g. an id")
    _add_model_options(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("predict", help="predict a CSV file with a saved model",
                       description="Predict the rows of a CSV file with a model written by "
                                   "`dartboost fit`; the feature columns are matched by name.")
    p.add_argument("data", help="CSV file with the model's feature columns (extra columns "
                                "are ignored)")
    p.add_argument("--model", required=True, help="model file written by `dartboost fit`")
    p.add_argument("--output", "-o", help="output CSV (default: standard output)")
    p.add_argument("--proba", action="store_true",
                   help="write class probabilities instead of labels (classification)")
    p.set_defaults(func=_cmd_predict)

    try:
        from .store.cli import add_store_parser
        add_store_parser(sub)
    except ImportError:  # pragma: no cover - store extras missing
        pass
    try:
        from .serving.cli import add_serve_parser
        add_serve_parser(sub)
    except ImportError:  # pragma: no cover
        pass
    return parser


def main(argv=None):
    """Entry point of the ``dartboost`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"dartboost: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
