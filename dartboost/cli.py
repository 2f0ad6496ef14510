"""Command line: ``dartboost demo|fit|predict|store|serve`` (also ``python -m dartboost``).

Exit status (``fit``, ``predict``, ``demo``): 0 success; 1 a runtime error (an
unreadable or malformed file, data the model cannot be fitted on); 2 a usage
error (argparse's own errors, an unknown or invalid ``--param``, a missing
output folder). A closed output pipe (``dartboost predict ... | head``) ends
quietly with status 0.
"""
import argparse
import bz2
import csv
import gzip
import lzma
import os
import sys

import numpy as np


class UsageError(Exception):
    """Bad command-line arguments: exit status 2."""


class DataError(Exception):
    """A runtime failure (unreadable or malformed input, failed fit): exit status 1."""


# magic bytes of the compressed formats read transparently
_COMPRESSED = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def _open_text(path):
    """``path`` opened as UTF-8 text, decompressing gzip/bzip2/xz (detected
    from the content, whatever the file is named)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    opener = next((op for sig, op in _COMPRESSED if magic.startswith(sig)), open)
    return opener(path, "rt", newline="", encoding="utf-8")


def _read_csv(path, sep=","):
    """Header and rows of a CSV file, as lists of strings."""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=sep)
            header = next(reader, None)
            rows = [row for row in reader if row]
    except FileNotFoundError:
        raise DataError(f"cannot read {path!r}: no such file")
    except UnicodeDecodeError:
        raise DataError(f"{path!r} is not UTF-8 text (nor gzip/bzip2/xz-compressed UTF-8)")
    except (OSError, EOFError, lzma.LZMAError) as exc:  # also corrupt/truncated archives
        raise DataError(f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}")
    except csv.Error as exc:
        raise DataError(f"{path!r} is not valid CSV: {exc}")
    if not header:
        raise DataError(f"{path!r} is empty (a header row is required)")
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            hint = "" if len(header) > 1 else f" (is the separator {sep!r} right? see --sep)"
            raise DataError(f"{path!r} line {i} has {len(row)} fields, the header has "
                            f"{len(header)}{hint}")
    return header, rows


_MISSING = {"", "na", "nan", "null", "none", "?"}


def _is_missing(v):
    return v.strip().lower() in _MISSING


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
            raise DataError(f"column {column!r} of {path!r} has a non-numeric value {v!r} "
                            f"(row {i + 2}); features must be numeric")
    return out


def _features(header, rows, columns, path):
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path!r} has no column(s) {missing}; its columns are {header}")
    idx = [header.index(c) for c in columns]
    return np.column_stack([_to_float([r[j] for r in rows], header[j], path) for j in idx]) \
        if rows else np.empty((0, len(columns)))


def _infer_task(target_values):
    """Classification for non-numeric targets or at most 20 distinct integers;
    called on the target without its missing cells."""
    try:
        y = np.array([float(v) for v in target_values])
    except ValueError:
        return "classification"
    if np.all(y == np.round(y)) and np.unique(y).size <= 20:
        return "classification"
    return "regression"


def _check_output_path(path, option):
    """Fail before any work if ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"the folder of {option} {path!r} does not exist: {folder!r}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"the folder of {option} {path!r} is not writable: {folder!r}")


# --------------------------------------------------------------- --param
def _parse_value(text):
    """``true``/``false``/``none`` and numbers become Python values; anything
    else stays a string (the estimator validates it)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _settable_params(cls):
    return set(cls().get_params()) - {"callbacks"}


def _parse_params(items):
    """``["key=value", ...]`` -> dict, names checked against both estimators."""
    from .estimators import DartClassifier, DartRegressor

    known = _settable_params(DartClassifier) | _settable_params(DartRegressor)
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--param expects key=value, got {item!r}")
        if key not in known:
            raise UsageError(f"--param {key!r} is not an estimator parameter; known: "
                             f"{', '.join(sorted(known))}")
        params[key] = _parse_value(value)
    return params


def _make_estimator(cls, params):
    """The estimator with ``params``, validated before any fitting."""
    from sklearn.utils._param_validation import InvalidParameterError

    unknown = set(params) - _settable_params(cls)
    if unknown:
        raise UsageError(f"parameter(s) {sorted(unknown)} do not apply to a {cls.__name__}")
    model = cls(**params)
    try:
        model._validate_params()
    except InvalidParameterError as exc:
        raise UsageError(str(exc))
    return model


def _warn(message):
    print(f"dartboost: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------ commands
def _cmd_fit(args):
    from .estimators import DartClassifier, DartRegressor
    from ._model_file import save

    _check_output_path(args.model, "--model")
    extra = _parse_params(args.param)
    header, rows = _read_csv(args.train, args.sep)
    if args.target not in header:
        hint = f" (is the separator {args.sep!r} right? see --sep)" if len(header) == 1 else ""
        raise DataError(f"target column {args.target!r} not in {args.train!r}; "
                        f"its columns are {header}{hint}")
    drop = set(args.drop or []) | {args.target}
    unknown = [c for c in (args.drop or []) if c not in header]
    if unknown:
        raise DataError(f"--drop names unknown column(s) {unknown}")
    t_idx = header.index(args.target)
    # a missing target is never a class nor a value: those rows are dropped
    n_rows = len(rows)
    rows = [r for r in rows if not _is_missing(r[t_idx])]
    if len(rows) < n_rows:
        _warn(f"dropped {n_rows - len(rows)} of {n_rows} rows whose target {args.target!r} "
              "is missing")
    if not rows:
        raise DataError(f"no row of {args.train!r} has a target value")
    columns = [c for c in header if c not in drop]
    X = _features(header, rows, columns, args.train)
    target = [r[t_idx].strip() for r in rows]
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
        model = _make_estimator(DartClassifier, {**params, **extra})
    else:
        y = _to_float(target, args.target, args.train)
        model = _make_estimator(DartRegressor, {"loss": args.loss, **params, **extra})
    try:
        model.fit(X, y)
    except ValueError as exc:
        raise DataError(f"cannot fit on {args.train!r}: {exc}")
    save(model, args.model, metadata={"feature_columns": columns, "target": args.target,
                                      "task": task})
    print(f"fitted a {task} model ({type(model).__name__}, boosting={model.boosting}, "
          f"{model.n_iter_} iterations) on {X.shape[0]} rows x {X.shape[1]} features; "
          f"saved to {args.model}")
    return 0


def _load_model_file(path):
    from ._model_file import FormatError, load
    from ._model_file import loads_state

    try:
        with open(path, "rb") as f:
            blob = f.read()
        meta = loads_state(blob)[0].get("metadata", {})
        model = load(path)
    except OSError as exc:
        raise DataError(f"cannot read model {path!r}: {exc.strerror}")
    except (FormatError, ValueError) as exc:
        raise DataError(f"{path!r} is not a valid dartboost model: {exc}")
    return model, meta


def _cmd_predict(args):
    if args.output:
        _check_output_path(args.output, "--output")
    model, meta = _load_model_file(args.model)
    header, rows = _read_csv(args.data, args.sep)
    columns = meta.get("feature_columns")
    if columns is None:
        raise DataError("the model file does not record its feature columns "
                        "(it was not written by `dartboost fit`)")
    X = _features(header, rows, columns, args.data)
    if args.proba and not hasattr(model, "predict_proba"):
        raise UsageError("--proba needs a classification model")
    if args.proba:
        head = [f"proba_{c}" for c in model.classes_]
        body = model.predict_proba(X).tolist()
    else:
        head = [f"predicted_{meta.get('target', 'target')}"]
        body = [[v] for v in model.predict(X).tolist()]
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(head)
        writer.writerows(body)
        out.flush()
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
    g.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="any DartClassifier/DartRegressor parameter, e.g. --param "
                        "max_depth=6 --param normalize_type=forest (repeatable; numbers, "
                        "true/false and none are typed; validated before fitting; takes "
                        "precedence over the options above)")


def _separator(text):
    named = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "space": " "}
    sep = named.get(text.lower(), text)
    if len(sep) != 1 or sep in "\"\r\n":
        raise argparse.ArgumentTypeError(f"the separator must be one character (or tab), "
                                         f"got {text!r}")
    return sep


def _add_csv_options(p):
    p.add_argument("--sep", type=_separator, default=",",
                   help="field separator of the CSV input: one character, or 'tab' "
                        "(default: ','). gzip, bzip2 and xz files are decompressed")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dartboost",
        description="Gradient-boosted trees with DART and MART, coded serving and an "
                    "erasure-coded model store.",
        epilog="exit status: 0 ok, 1 runtime error, 2 usage error")
    parser.add_argument("--version", action="version", version=f"dartboost {_version()}")
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
                                   "empty or NA cells are missing values. Rows whose target "
                                   "is missing are dropped, with a warning that counts them.")
    p.add_argument("train", help="training CSV file (header row required)")
    p.add_argument("--target", required=True, help="name of the target column")
    p.add_argument("--model", required=True, help="output model file (dartboost format)")
    p.add_argument("--drop", action="append", metavar="COLUMN",
                   help="column to ignore (repeatable), e.g. an id")
    _add_csv_options(p)
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
    _add_csv_options(p)
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


def _version():
    from . import __version__
    return __version__


def _end_quietly_on_broken_pipe():
    """The reader of our output went away (``| head``): stop without a
    traceback, and keep the interpreter's final flush of stdout from
    raising again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured)
        pass


def main(argv=None):
    """Entry point of the ``dartboost`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit with 2 here
    try:
        return args.func(args)
    except BrokenPipeError:
        _end_quietly_on_broken_pipe()
        return 0
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the store/serve commands report bad arguments this way
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
