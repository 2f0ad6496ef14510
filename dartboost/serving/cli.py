"""``dartboost serve``: serve a saved model over HTTP on localhost.

Wiring (in ``dartboost/cli.py``)::

    from dartboost.serving.cli import add_serve_parser
    add_serve_parser(subparsers)      # sets func=run_serve on the sub-parser
    ...
    args = parser.parse_args(argv)
    return args.func(args)

Standalone: ``python -m dartboost.serving.cli MODEL.joblib --port 8000``.
"""

import argparse
import signal
import sys
import threading

__all__ = ["add_serve_parser", "run_serve", "main"]


def add_serve_parser(subparsers):
    """Add the ``serve`` sub-command to an ``argparse`` sub-parsers object.

    Returns the sub-parser; its ``func`` default is :func:`run_serve`.
    """
    p = subparsers.add_parser(
        "serve",
        help="serve a saved model over HTTP (coded redundancy, /predict /health /metrics)",
        description="Start a serving pool for a saved model and answer predictions over HTTP.",
    )
    _add_arguments(p)
    p.set_defaults(func=run_serve)
    return p


def _add_arguments(p):
    p.add_argument("model", help="fitted CodedPredictor or estimator: a file written by "
                                 "`dartboost fit` / dartboost.store.save, or a joblib file")
    p.add_argument("--mode", default=None,
                   choices=["coded", "none", "equal", "backup", "replication"],
                   help="redundancy (default: coded for a CodedPredictor, else none)")
    p.add_argument("--parity-data", default=None, metavar="X.npy",
                   help="unlabelled queries (.npy) to fit a CodedPredictor when MODEL is a "
                        "plain estimator and --mode coded")
    p.add_argument("-k", type=int, default=2, help="group size when fitting parity (default 2)")
    p.add_argument("-r", type=int, default=1, help="parities per group when fitting (default 1)")
    p.add_argument("--backup", default=None, metavar="FILE",
                   help="file with a fitted cheap backup model (--mode backup)")
    p.add_argument("--workers", type=int, default=None, help="base model instances")
    p.add_argument("--extra", type=int, default=None, help="extra workers (default per mode)")
    p.add_argument("--backend", default="process", choices=["process", "loky", "dask"])
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batch-delay", type=float, default=0.0, help="seconds")
    p.add_argument("--group-timeout", type=float, default=0.01, help="seconds")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--hang-timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")


def _load_file(path):
    """A model file: dartboost's own format (``dartboost fit`` / ``store.save``) or joblib.

    Both can hold pickled objects; the operator chose the file to serve, so it
    is trusted like any code they run.
    """
    import joblib

    try:
        from dartboost.store import FormatError, load
    except ImportError:  # pragma: no cover - store not installed
        return joblib.load(path)
    try:
        return load(path, allow_pickle=True)
    except FormatError:
        return joblib.load(path)


def _load_model(args):
    import numpy as np

    model = _load_file(args.model)
    is_coded = hasattr(model, "parity_predict")
    mode = args.mode or ("coded" if is_coded else "none")
    if mode == "coded" and not is_coded:
        if args.parity_data is None:
            raise SystemExit("--mode coded needs a saved CodedPredictor or --parity-data X.npy")
        from dartboost.coded import CodedPredictor

        X = np.load(args.parity_data, allow_pickle=False)
        model = CodedPredictor(model, k=args.k, r=args.r).fit(X)
    backup = _load_file(args.backup) if args.backup else None
    return model, mode, backup


def run_serve(args):
    """Handler of ``dartboost serve``; returns the exit status."""
    from ._http import make_server
    from ._pool import CodedPool

    model, mode, backup = _load_model(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}, not loopback; put a proxy with "
              "authentication in front of it", file=sys.stderr)
    pool = CodedPool(
        model, mode=mode, n_workers=args.workers, n_extra=args.extra, k=args.k,
        backend=args.backend, address=args.scheduler, backup=backup,
        batch_size=args.batch_size, max_batch_delay=args.max_batch_delay,
        group_timeout=args.group_timeout, request_timeout=args.request_timeout,
        hang_timeout=args.hang_timeout,
    )
    try:
        server = make_server(pool, host=args.host, port=args.port, verbose=args.verbose)
    except BaseException:
        pool.close()
        raise
    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    server.start()
    print(f"dartboost serve: {mode} pool ({pool.n_base} base + {pool.n_extra} extra workers, "
          f"{pool.backend_name}) on {server.url}", flush=True)
    try:
        stop.wait(args.duration)
    finally:
        server.stop()  # closes the pool: workers are shut down, none left behind
    print("dartboost serve: stopped", flush=True)
    return 0


def main(argv=None):
    """Standalone entry point (``python -m dartboost.serving.cli``)."""
    p = argparse.ArgumentParser(prog="dartboost-serve", description=__doc__.splitlines()[0])
    _add_arguments(p)
    return run_serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
