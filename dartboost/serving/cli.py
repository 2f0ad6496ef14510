"""``dartboost serve``: serve a saved model over HTTP on localhost.

Wiring (in ``dartboost/cli.py``)::

    from dartboost.serving.cli import add_serve_parser
    add_serve_parser(subparsers)      # sets func=run_serve on the sub-parser
    ...
    args = parser.parse_args(argv)
    return args.func(args)

Standalone: ``python -m dartboost.serving.cli MODEL.dbm --port 8000``.

Model files are untrusted input: only dartboost's own format is read, without
pickles, unless ``--allow-pickle`` is given (joblib files and pickled objects
run code when loaded). A corrupt file is an error, never a fallback.
"""

import argparse
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
    p.add_argument("model", help="fitted estimator (or CodedPredictor): a file written by "
                                 "`dartboost fit` / dartboost.store.save; joblib and "
                                 "pickled objects only with --allow-pickle")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load joblib files and pickled objects; they run code when "
                        "loaded, so only for files you trust")
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
    p.add_argument("--backend", default="process", choices=["process", "loky", "thread", "dask"],
                   help="worker processes (process, loky), threads of the server (thread: "
                        "no isolation, no IPC; for small fast models) or a Dask cluster")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batch-delay", type=float, default=0.0, help="seconds")
    p.add_argument("--group-timeout", type=float, default=0.01, help="seconds")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--hang-timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--model-name", default="model", help="name under /v2/models/")
    p.add_argument("--max-rows", type=int, default=4096, help="most rows per request")
    p.add_argument("--max-body", type=int, default=16 * 1024 * 1024, help="bytes per body")
    p.add_argument("--max-concurrency", type=int, default=256,
                   help="requests answered at once; more get 429")
    p.add_argument("--auth-token-file", default=None, metavar="FILE",
                   help="require `Authorization: Bearer <token>` with the token in FILE "
                        "(or in $DARTBOOST_SERVE_TOKEN); health probes stay open")
    p.add_argument("--switch-interval", type=float, default=0.0005, metavar="SECONDS",
                   help="CPython GIL switch interval of the server process (default 0.5 ms; "
                        "Python's own default is 5 ms)")
    p.add_argument("--no-micro-batch", dest="micro_batch", action="store_false",
                   help="submit every HTTP request to the pool on its own (by default small "
                        "requests that arrive together are merged into one pool request)")
    p.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                   help="event loop (default auto: uvloop when installed)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")


def _load_file(path, allow_pickle=False):
    """A model file: dartboost's own format, or (``allow_pickle``) a joblib file.

    dartboost files are read with pickles refused unless ``allow_pickle``; a
    file that has dartboost's magic bytes but does not parse is an error, not
    a reason to try joblib.
    """
    from dartboost._model_file import FormatError, load
    from dartboost._model_file import MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except OSError as exc:
        raise SystemExit(f"dartboost serve: cannot read {path}: {exc}") from None
    if head == MAGIC:
        try:
            return load(path, allow_pickle=allow_pickle)
        except FormatError as exc:
            hint = (" (pass --allow-pickle only if you trust the file)"
                    if "pickle" in str(exc) and not allow_pickle else "")
            raise SystemExit(f"dartboost serve: {path} is not a valid model file: "
                             f"{exc}{hint}") from None
    if not allow_pickle:
        raise SystemExit(f"dartboost serve: {path} is not a dartboost model file; other "
                         "formats (joblib, pickle) run code when loaded: pass --allow-pickle "
                         "only if you trust the file")
    import joblib

    return joblib.load(path)


def _load_model(args):
    import numpy as np

    model = _load_file(args.model, args.allow_pickle)
    is_coded = hasattr(model, "parity_predict")
    mode = args.mode or ("coded" if is_coded else "none")
    if mode == "coded" and not is_coded:
        if args.parity_data is None:
            raise SystemExit("--mode coded needs a saved CodedPredictor or --parity-data X.npy")
        from dartboost.coded import CodedPredictor

        try:
            X = np.load(args.parity_data, allow_pickle=False)
            model = CodedPredictor(model, k=args.k, r=args.r).fit(X)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"dartboost serve: cannot fit the parity models on "
                             f"--parity-data {args.parity_data}: {exc}") from None
    backup = _load_file(args.backup, args.allow_pickle) if args.backup else None
    return model, mode, backup


def _auth_token(args):
    import os

    if args.auth_token_file:
        try:
            with open(args.auth_token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"dartboost serve: cannot read --auth-token-file: {exc}") from None
        if not token:
            raise SystemExit("dartboost serve: --auth-token-file is empty")
        return token
    return os.environ.get("DARTBOOST_SERVE_TOKEN") or None


def run_serve(args):
    """Handler of ``dartboost serve``; returns the exit status.

    Serves until SIGINT/SIGTERM (or ``--duration``), then shuts down
    gracefully: no new connections, requests in flight answered, workers
    stopped.
    """
    from ._http import make_server
    from ._pool import CodedPool

    model, mode, backup = _load_model(args)
    token = _auth_token(args)
    # The server's threads (event loop, dispatcher, backend receivers) hand
    # every request to each other; with CPython's default 5 ms GIL switch
    # interval a hand-off can wait that long behind a busy thread. This
    # process only serves, so a short interval is a pure latency gain.
    sys.setswitchinterval(args.switch_interval)
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"warning: binding to {args.host}, not loopback, without --auth-token-file",
              file=sys.stderr)
    pool = CodedPool(
        model, mode=mode, n_workers=args.workers, n_extra=args.extra, k=args.k,
        backend=args.backend, address=args.scheduler, backup=backup,
        batch_size=args.batch_size, max_batch_delay=args.max_batch_delay,
        group_timeout=args.group_timeout, request_timeout=args.request_timeout,
        hang_timeout=args.hang_timeout,
    )
    try:
        server = make_server(pool, host=args.host, port=args.port, verbose=args.verbose,
                             model_name=args.model_name, max_rows=args.max_rows,
                             max_body=args.max_body, max_concurrency=args.max_concurrency,
                             auth_token=token, micro_batch=args.micro_batch, loop=args.loop)
    except BaseException:
        pool.close()
        raise

    # Models and data are loaded: move them out of the collector's reach, so
    # full collections do not scan them (pauses of 100+ ms otherwise land in
    # the tail latency).
    import gc

    gc.collect()
    gc.freeze()

    def announce():
        while not server._server.started and not server._server.should_exit:
            threading.Event().wait(0.01)
        print(f"dartboost serve: {mode} pool ({pool.n_base} base + {pool.n_extra} extra "
              f"workers, {pool.backend_name}) on {server.url}", flush=True)
        if args.duration is not None:
            threading.Event().wait(args.duration)
            server._server.should_exit = True

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()  # uvicorn: SIGINT/SIGTERM -> graceful shutdown
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
