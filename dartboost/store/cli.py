"""``dartboost store put|get|ls|verify|repair|gc|rm``: the store from the shell.

Locations are given with ``--loc`` (repeat it, or pass a comma-separated list)
or the ``DARTBOOST_STORE`` environment variable; ``-k``/``-r`` are needed only
to create a store. Exit status: 0 success, 1 problems found (verify), 2 error
or unrecoverable data.

The main CLI wires this in with::

    from dartboost.store.cli import add_store_parser
    add_store_parser(subparsers)          # adds "store", sets func=run_store
    args = parser.parse_args(argv); return args.func(args)

It also runs standalone: ``python -m dartboost.store.cli --loc ... ls``.
"""
import argparse
import datetime
import json
import os
import sys

from .._model_file import FormatError
from ._locations import StoreError
from ._store import ModelStore


def _locations(args):
    locs = []
    for item in args.loc or []:
        locs += [u for u in item.split(",") if u]
    if not locs and os.environ.get("DARTBOOST_STORE"):
        locs = [u for u in os.environ["DARTBOOST_STORE"].split(",") if u]
    if not locs:
        raise ValueError("no store locations: pass --loc URL (once per shard, or comma-separated) "
                         "or set DARTBOOST_STORE")
    return locs


def _storage_options(args):
    if not args.storage_options:
        return None
    try:
        opts = json.loads(args.storage_options)
    except ValueError as exc:
        raise ValueError(f"--storage-options is not valid JSON: {exc}") from None
    if not isinstance(opts, (dict, list)):
        raise ValueError("--storage-options must be a JSON object (or a list, one per location)")
    return opts


def _open(args, create=False):
    return ModelStore(_locations(args), k=args.k, r=args.r, create=create or args.k is not None,
                      storage_options=_storage_options(args))


def _fmt_size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _cmd_put(args, out):
    if args.k is None:
        store = _open(args)
    else:
        store = _open(args, create=True)
    with open(args.file, "rb") as f:
        blob = f.read()
    version = store.put(args.name, blob)
    st = store.last_put_stats
    print(f"stored {args.name!r} version {version}: {_fmt_size(st['object_bytes'])} as "
          f"{store.k}+{store.r} shards ({st['chunks_written']} chunks, "
          f"{_fmt_size(st['bytes_written'])} written)", file=out)
    return 0


def _cmd_get(args, out):
    store = _open(args)
    blob = store.get_bytes(args.name, args.version)
    path = args.output or f"{args.name}.dbm"
    with open(path, "wb") as f:
        f.write(blob)
    print(f"wrote {args.name!r} ({_fmt_size(len(blob))}) to {path}", file=out)
    return 0


def _cmd_ls(args, out):
    store = _open(args)
    if args.name:
        print(f"{'version':>8}  {'size':>10}  {'kind':<10} created", file=out)
        for v in store.versions(args.name):
            m = store.info(args.name, v)
            when = datetime.datetime.fromtimestamp(m["created"], datetime.timezone.utc)
            print(f"{v:>8}  {_fmt_size(m['size']):>10}  {m['kind']:<10} "
                  f"{when:%Y-%m-%d %H:%M:%S}Z", file=out)
        return 0
    names = store.list()
    print(f"store k={store.k} r={store.r}, {len(names)} object(s)", file=out)
    for n in names:
        vs = store.versions(n)
        m = store.info(n, vs[-1])
        print(f"  {n:<30} latest v{vs[-1]} ({len(vs)} version(s)), {_fmt_size(m['size'])}, "
              f"{m['kind']} {m.get('class') or ''}", file=out)
    return 0


def _cmd_verify(args, out):
    store = _open(args)
    rep = store.verify(args.name, args.version)
    print(rep, file=out)
    if rep.unrecoverable:
        return 2
    if rep.problems:
        print("run 'dartboost store repair' to rebuild the missing/corrupt items", file=out)
        return 1
    return 0


def _cmd_repair(args, out):
    store = _open(args, create=True)  # a replaced empty location gets its config back
    rep = store.repair(args.name, args.version)
    print(rep, file=out)
    return 2 if rep.unrecoverable else 0


def _cmd_gc(args, out):
    store = _open(args)
    rep = store.gc(args.name, grace=args.grace, dry_run=args.dry_run)
    print(rep, file=out)
    for n, s, sub, fn in (rep.orphans + rep.stale_temporaries if args.dry_run else rep.removed):
        print(f"  {'would remove' if args.dry_run else 'removed'} {n} shard {s} {sub}/{fn}", file=out)
    return 0


def _cmd_rm(args, out):
    store = _open(args)
    gone = store.delete(args.name, args.version)
    print(f"deleted {args.name!r} version(s) {gone}", file=out)
    return 0


def add_store_parser(subparsers):
    """Add the ``store`` command to an argparse subparsers object.

    Returns the ``store`` parser; its default ``func`` is :func:`run_store`.
    """
    p = subparsers.add_parser("store", help="erasure-coded model store",
                              description="Erasure-coded model store (k data + r parity shards).")
    _configure(p)
    return p


def _configure(p):
    p.add_argument("--loc", action="append", metavar="URL",
                   help="shard location (fsspec URL); repeat or comma-separate, k+r in total "
                        "(default: $DARTBOOST_STORE)")
    p.add_argument("-k", type=int, default=None, help="data shards (to create a store)")
    p.add_argument("-r", type=int, default=None, help="parity shards (to create a store)")
    p.add_argument("--storage-options", metavar="JSON",
                   help="fsspec storage options as JSON, e.g. "
                        "'{\"client_kwargs\": {\"endpoint_url\": \"http://host:9000\"}}' "
                        "(default: $DARTBOOST_STORE_OPTIONS)")
    sub = p.add_subparsers(dest="store_cmd", metavar="{put,get,ls,verify,repair,gc,rm}")
    sub.required = True
    s = sub.add_parser("put", help="store a file (e.g. a model saved with dartboost.store.save)")
    s.add_argument("name")
    s.add_argument("file")
    s.set_defaults(store_func=_cmd_put)
    s = sub.add_parser("get", help="fetch an object into a file, rebuilding lost shards")
    s.add_argument("name")
    s.add_argument("-o", "--output", help="output file (default NAME.dbm)")
    s.add_argument("--version", type=int, default=None)
    s.set_defaults(store_func=_cmd_get)
    s = sub.add_parser("ls", help="list objects, or the versions of one")
    s.add_argument("name", nargs="?")
    s.set_defaults(store_func=_cmd_ls)
    for cmd, fn, hlp in (("verify", _cmd_verify, "check every shard's checksum"),
                         ("repair", _cmd_repair, "rebuild missing or corrupt shards")):
        s = sub.add_parser(cmd, help=hlp)
        s.add_argument("name", nargs="?")
        s.add_argument("--version", type=int, default=None)
        s.set_defaults(store_func=fn)
    s = sub.add_parser("gc", help="remove orphan chunks and stale temporary files")
    s.add_argument("name", nargs="?")
    s.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="leave items younger than this (puts in flight); default 3600")
    s.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    s.set_defaults(store_func=_cmd_gc)
    s = sub.add_parser("rm", help="delete an object or one version")
    s.add_argument("name")
    s.add_argument("--version", type=int, default=None)
    s.set_defaults(store_func=_cmd_rm)
    p.set_defaults(func=run_store)


def run_store(args, out=None):
    """Run a parsed ``store`` command; returns the exit status."""
    out = out or sys.stdout
    if not getattr(args, "storage_options", None):
        args.storage_options = os.environ.get("DARTBOOST_STORE_OPTIONS")
    try:
        return args.store_func(args, out)
    except (StoreError, FormatError, ValueError, OSError) as exc:
        print(f"dartboost store: error: {exc}", file=sys.stderr)
        return 2


def main(argv=None):
    """Standalone entry point (``python -m dartboost.store.cli``)."""
    parser = argparse.ArgumentParser(prog="dartboost store",
                                     description="Erasure-coded model store.")
    _configure(parser)
    args = parser.parse_args(argv)
    return run_store(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
