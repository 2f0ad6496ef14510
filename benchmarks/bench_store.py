"""Benchmark of the erasure-coded model store (dartboost.store).

Measures, on this machine:

1. Reed-Solomon encode/decode throughput of our GF(2^8) kernels (ISA-L, numba,
   NumPy) against zfec, pyeclib and galois, for 4+2, 8+3 and 10+4, decoding the
   data with r data shards lost (``--codec-only`` for just this table).
2. Storage overhead on disk of a 500-tree DART model for several (k, r) versus
   3x replication, with the number of lost locations each survives.
3. Bytes and time per checkpoint over a 500-tree DART fit: full rewrite vs
   incremental parity (several chunk sizes), plus a plain single-file save.
4. Recovery: reading the model with r locations lost, and repairing them.

Timings are medians of several runs. Results go to
``benchmarks/results/store.json``; ``--quick`` runs a smaller version.

Usage::

    python benchmarks/bench_store.py [--quick] [--out benchmarks/results/store.json]
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np


def median_time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


# --------------------------------------------------------------------- codec
def _codec_candidates(k, r, data, lost):
    """``(impl, encode(), decode(), check())`` for every codec installed here.

    Each decode starts from the k + r shards less ``lost`` (r data shards: the
    worst case, every lost byte is arithmetic) and returns the k data shards.
    """
    from dartboost.store import ReedSolomon
    from dartboost.store import _gf256 as gf

    out = []
    for backend in gf.available_backends():
        for threads in ((None,) if backend == "numpy" else (1, 2)):
            rs = ReedSolomon(k, r, backend=backend)
            parity = np.empty((r, data.shape[1]), dtype=np.uint8)

            def setup(rs=rs, parity=parity, threads=threads):
                gf.MAX_THREADS = threads
                rs.encode(data, out=parity)
                return {i: data[i] for i in range(k) if i not in lost} | \
                    {k + j: parity[j] for j in range(r)}

            avail = setup()
            name = f"dartboost {backend}" + (f" ({threads} thread{'s' * (threads > 1)})"
                                             if threads else "")
            out.append((name, setup, lambda rs=rs, p=parity: rs.encode(data, out=p),
                        lambda rs=rs, a=avail: rs.decode_data(a),
                        lambda got: all(np.array_equal(got[i], data[i]) for i in range(k))))
    try:
        import zfec
    except ImportError:
        zfec = None
    if zfec is not None:
        enc, dec = zfec.Encoder(k, k + r), zfec.Decoder(k, k + r)
        blocks = tuple(bytes(data[i]) for i in range(k))
        coded = enc.encode(blocks, tuple(range(k, k + r)))
        # zfec wants each surviving primary block at its own index and
        # secondary blocks in the gaps
        spare = iter(range(k, k + r))
        nums = tuple(i if i not in lost else next(spare) for i in range(k))
        shares = tuple(blocks[i] if i < k else coded[i - k] for i in nums)
        out.append(("zfec (C, 1 thread)", None,
                    lambda: enc.encode(blocks, tuple(range(k, k + r))),
                    lambda: dec.decode(shares, nums),
                    lambda got: b"".join(got) == b"".join(blocks)))
    try:
        from pyeclib.ec_iface import ECDriver
    except ImportError:
        ECDriver = None
    if ECDriver is not None:
        blob = data.tobytes()
        for ec_type in ("isa_l_rs_cauchy", "liberasurecode_rs_vand"):
            try:
                drv = ECDriver(k=k, m=r, ec_type=ec_type)
            except Exception:  # noqa: BLE001 - a backend missing from this build
                continue
            frags = drv.encode(blob)
            survivors = [f for i, f in enumerate(frags) if i not in lost]
            # its own fragment format (headers, its own matrix): side by side only
            out.append((f"pyeclib {ec_type} (1 thread)", None, lambda d=drv: d.encode(blob),
                        lambda d=drv, s=survivors: d.decode(s),
                        lambda got: got == blob))
    try:
        import galois
    except ImportError:
        galois = None
    if galois is not None:
        GF = galois.GF(2 ** 8, irreducible_poly=0x11D)
        rs = ReedSolomon(k, r)
        C, D = GF(rs.parity_matrix), GF(data)
        P = C @ D
        use = tuple(i for i in range(k + r) if i not in lost)[:k]
        src = GF(np.vstack([data[i] if i < k else np.asarray(P[i - k]) for i in use]))
        R = GF(rs._recovery_matrix(use, tuple(lost)))
        out.append(("galois (numba)", None, lambda: C @ D, lambda: R @ src,
                    lambda got: np.array_equal(np.asarray(got), data[list(lost)])))
    return out


def bench_codec(total_mb, repeat, shapes=((4, 2), (8, 3), (10, 4))):
    from dartboost.store import _gf256 as gf

    rng = np.random.default_rng(0)
    rows = []
    for k, r in shapes:
        L = (total_mb << 20) // k // 64 * 64
        data = rng.integers(0, 256, (k, L), dtype=np.uint8)
        nbytes = k * L
        lost = list(range(r))
        for impl, setup, enc, dec, check in _codec_candidates(k, r, data, lost):
            if setup is not None:
                setup()
            enc(), dec()  # compile / warm up
            t_enc = median_time(enc, repeat)
            t_dec = median_time(dec, repeat)
            assert check(dec()), impl
            gf.MAX_THREADS = None
            rows.append({"k": k, "r": r, "impl": impl, "MB": nbytes / 1e6,
                         "encode_GBps": nbytes / t_enc / 1e9, "decode_GBps": nbytes / t_dec / 1e9,
                         "load_avg_1min": os.getloadavg()[0]})
            print(f"  {k}+{r} {impl:<40} encode {rows[-1]['encode_GBps']:6.2f}  decode "
                  f"{rows[-1]['decode_GBps']:6.2f} GB/s  (load {os.getloadavg()[0]:.1f})", flush=True)
    return rows


# ------------------------------------------------------------------- DART fit
class _Timed:
    """Wrap a checkpoint callback to time it (state extraction included)."""

    def __init__(self, cb):
        self.cb, self.seconds = cb, []

    def on_fit_begin(self, est):
        self.cb.on_fit_begin(est)

    def on_iteration_end(self, est, it, logs):
        t = time.perf_counter()
        n = len(self.cb.history_)
        self.cb.on_iteration_end(est, it, logs)
        if len(self.cb.history_) > n:
            self.seconds.append(time.perf_counter() - t)

    def on_fit_end(self, est):
        self.cb.on_fit_end(est)


class _PlainSave:
    """Baseline: rewrite the whole model to one file every N iterations."""

    def __init__(self, path, every):
        self.path, self.every, self.seconds, self.bytes = path, every, [], []
        self.serialize_seconds = []

    def on_iteration_end(self, est, it, logs):
        if (it + 1) % self.every == 0:
            from dartboost.store import dumps
            t = time.perf_counter()
            blob, _ = dumps(est)  # state extraction + stable format
            self.serialize_seconds.append(time.perf_counter() - t)
            with open(self.path, "wb") as f:
                f.write(blob)
            self.seconds.append(time.perf_counter() - t)
            self.bytes.append(len(blob))


def bench_checkpoints(tmp, n_estimators, every, n_samples):
    from sklearn.datasets import make_regression

    from dartboost import DartRegressor
    from dartboost.store import CheckpointCallback, ModelStore

    X, y = make_regression(n_samples, 20, noise=1.0, random_state=0)
    configs = [("full rewrite, 64 KiB chunks", 1 << 16, False),
               ("incremental, 64 KiB chunks", 1 << 16, True),
               ("incremental, 16 KiB chunks", 1 << 14, True),
               ("incremental, 4 KiB chunks", 1 << 12, True)]
    cbs, stores = [], []
    for i, (label, chunk, incr) in enumerate(configs):
        st = ModelStore([os.path.join(tmp, f"ck{i}", f"s{j}") for j in range(6)], k=4, r=2,
                        chunk_size=chunk)
        stores.append(st)
        cbs.append(_Timed(CheckpointCallback(st, "run", every=every, incremental=incr,
                                             chunk_size=chunk)))
    plain = _PlainSave(os.path.join(tmp, "plain.dbm"), every)
    params = dict(n_estimators=n_estimators, random_state=0, n_jobs=1, boosting="dart")
    t = time.perf_counter()
    est = DartRegressor(**params).fit(X, y)
    fit_plain = time.perf_counter() - t
    t = time.perf_counter()
    est_ck = DartRegressor(callbacks=cbs + [plain], **params).fit(X, y)
    fit_ck = time.perf_counter() - t
    assert np.array_equal(est.predict(X[:500]), est_ck.predict(X[:500]))
    rows = []
    for (label, chunk, incr), cb, st in zip(configs, cbs, stores):
        h = cb.cb.history_
        periodic = h[:-1] if not h[-1]["final"] or len(h) > n_estimators // every else h
        later = [x for x in periodic[1:]]  # exclude the first (always full) checkpoint
        rows.append({
            "config": label, "chunk_size": chunk, "incremental": incr,
            "checkpoints": len(h),
            "model_bytes_final": h[-1]["object_bytes"],
            "bytes_per_checkpoint_median": statistics.median(x["bytes_written"] for x in later),
            "chunk_bytes_per_checkpoint_median": statistics.median(
                x["chunk_bytes_written"] for x in later),
            "manifest_bytes_per_checkpoint_median": statistics.median(
                x["manifest_bytes_written"] for x in later),
            "bytes_total": sum(x["bytes_written"] for x in h),
            "seconds_per_checkpoint_median": statistics.median(cb.seconds[1:]),
            "seconds_total": sum(cb.seconds),
            "relayouts": sum(1 for x in later if x["relayout"]),
            "disk_bytes_all_versions": dir_bytes(os.path.join(tmp, f"ck{configs.index((label, chunk, incr))}")),
        })
        # the last checkpoint is the fitted model, bit for bit
        assert np.array_equal(st.get("run").predict(X[:500]), est.predict(X[:500]))
    rows.append({"config": "plain file, full rewrite (no redundancy)", "chunk_size": None,
                 "incremental": False, "checkpoints": len(plain.seconds),
                 "model_bytes_final": plain.bytes[-1],
                 "bytes_per_checkpoint_median": statistics.median(plain.bytes[1:]),
                 "bytes_total": sum(plain.bytes),
                 "seconds_per_checkpoint_median": statistics.median(plain.seconds[1:]),
                 "serialize_seconds_median": statistics.median(plain.serialize_seconds[1:]),
                 "seconds_total": sum(plain.seconds)})
    fit = {"n_estimators": n_estimators, "every": every, "n_samples": n_samples,
           "fit_seconds_no_callbacks": fit_plain, "fit_seconds_with_all_callbacks": fit_ck}
    return rows, fit, est


# ------------------------------------------------------------ storage overhead
def bench_overhead(tmp, est):
    from dartboost.store import ModelStore, dumps

    blob, _ = dumps(est)
    rows = [{"scheme": "3x replication", "k": 1, "r": 2, "survives_losses": 2,
             "disk_bytes": 3 * len(blob), "overhead": 3.0}]
    for k, r in ((2, 1), (4, 2), (6, 3), (10, 4)):
        root = os.path.join(tmp, f"ov{k}{r}")
        st = ModelStore([os.path.join(root, f"s{i}") for i in range(k + r)], k=k, r=r)
        st.put("model", est)
        disk = dir_bytes(root)
        rows.append({"scheme": f"RS {k}+{r}", "k": k, "r": r, "survives_losses": r,
                     "disk_bytes": disk, "overhead": disk / len(blob)})
    return len(blob), rows


# ------------------------------------------------------------------- recovery
def bench_recovery(tmp, est, big_mb, repeat, n_trees):
    from dartboost.store import ModelStore

    out = []
    rng = np.random.default_rng(1)
    objects = [(f"{n_trees}-tree DART model", est),
               (f"{big_mb} MiB of arrays", {"w": rng.normal(size=(big_mb << 20) // 8)})]
    for label, obj in objects:
        root = os.path.join(tmp, "rec" + str(len(out)))
        locs = [os.path.join(root, f"s{i}") for i in range(6)]
        st = ModelStore(locs, k=4, r=2)
        st.put("m", obj)
        size = st.info("m")["size"]
        t_ok = median_time(lambda: st.get_bytes("m"), repeat)
        backup = os.path.join(tmp, "backup")
        shutil.copytree(root, backup)
        # lose r = 2 data locations: every row must be decoded from parity
        t_deg, t_rep = [], []
        for _ in range(repeat):
            shutil.rmtree(locs[0])
            shutil.rmtree(locs[2])
            s2 = ModelStore(locs)
            t = time.perf_counter()
            s2.get_bytes("m")
            t_deg.append(time.perf_counter() - t)
            t = time.perf_counter()
            rep = s2.repair("m")
            t_rep.append(time.perf_counter() - t)
            assert not rep.unrecoverable and s2.verify().ok
            shutil.rmtree(root)
            shutil.copytree(backup, root)
        shutil.rmtree(backup)
        out.append({"object": label, "bytes": size, "k": 4, "r": 2,
                    "get_healthy_s": t_ok, "get_with_r_lost_s": statistics.median(t_deg),
                    "repair_r_locations_s": statistics.median(t_rep)})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "store.json"))
    ap.add_argument("--codec-only", action="store_true",
                    help="only the codec table (written to results/store_codec.json by default)")
    args = ap.parse_args(argv)
    quick = args.quick
    if args.codec_only:
        return codec_only(args, 8 if quick else 64, 3 if quick else 7)
    repeat = 3 if quick else 5
    tmp = tempfile.mkdtemp(prefix="bench_store_")
    t0 = time.time()
    try:
        codec = bench_codec(8 if quick else 64, repeat)
        ck_rows, fit, est = bench_checkpoints(tmp, 60 if quick else 500, 10,
                                              2000 if quick else 10000)
        model_bytes, overhead = bench_overhead(tmp, est)
        recovery = bench_recovery(tmp, est, 8 if quick else 64, repeat, fit["n_estimators"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import dartboost.store._gf256 as gf
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                    "numba": gf.HAVE_NUMBA},
        "quick": quick, "repeat": repeat, "wall_seconds": time.time() - t0,
        "codec": codec, "checkpoints": ck_rows, "fit": fit,
        "model_bytes": model_bytes, "storage_overhead": overhead, "recovery": recovery,
    }
    print(f"\n== Reed-Solomon throughput (GB/s of data; median of {repeat}) ==")
    print(f"{'k+r':<6}{'implementation':<42}{'encode':>9}{'decode':>9}")
    for r in codec:
        print(f"{r['k']}+{r['r']:<4}{r['impl']:<42}{r['encode_GBps']:>9.2f}{r['decode_GBps']:>9.2f}")
    print(f"\n== Storage on disk for a {model_bytes / 1e6:.2f} MB model ==")
    for r in overhead:
        print(f"{r['scheme']:<16} survives {r['survives_losses']} lost: "
              f"{r['disk_bytes'] / 1e6:8.2f} MB  ({r['overhead']:.2f}x)")
    print(f"\n== Checkpoints over a {fit['n_estimators']}-tree DART fit, every {fit['every']} "
          f"iterations (k=4, r=2; medians over checkpoints) ==")
    print(f"fit alone {fit['fit_seconds_no_callbacks']:.1f} s; with all checkpointers "
          f"{fit['fit_seconds_with_all_callbacks']:.1f} s")
    print(f"{'configuration':<44}{'KB/ckpt':>9}{'ms/ckpt':>9}{'MB total':>10}{'s total':>9}")
    for r in ck_rows:
        print(f"{r['config']:<44}{r['bytes_per_checkpoint_median'] / 1e3:>9.1f}"
              f"{r['seconds_per_checkpoint_median'] * 1e3:>9.1f}{r['bytes_total'] / 1e6:>10.2f}"
              f"{r['seconds_total']:>9.2f}")
    print(f"\n== Recovery, k=4 r=2, two data locations lost (median of {repeat}) ==")
    for r in recovery:
        print(f"{r['object']:<22} {r['bytes'] / 1e6:7.2f} MB: get healthy {r['get_healthy_s']:.3f} s, "
              f"get with 2 lost {r['get_with_r_lost_s']:.3f} s, repair {r['repair_r_locations_s']:.3f} s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out} ({result['wall_seconds']:.0f} s)")


def _isal_library():
    from dartboost.store import _gf256_isal

    return _gf256_isal.library_path()


def codec_only(args, total_mb, repeat):
    import dartboost.store._gf256 as gf
    t0 = time.time()
    load_before = os.getloadavg()
    codec = bench_codec(total_mb, repeat)
    out = args.out if not args.out.endswith("store.json") else args.out.replace(
        "store.json", "store_codec.json")
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "load_avg_before": load_before,
                          "load_avg_at_end": os.getloadavg(), "numba": gf.HAVE_NUMBA,
                          "backends": gf.available_backends(),
                          "isal_library": _isal_library(),
                          "note": "machine shared with other sessions; medians"},
              "object_MiB": total_mb, "repeat": repeat, "wall_seconds": time.time() - t0,
              "codec": codec}
    print(f"== Reed-Solomon throughput (GB/s of data, {total_mb} MiB objects; median of {repeat}) ==")
    print(f"{'k+r':<6}{'implementation':<42}{'encode':>9}{'decode':>9}")
    for r in codec:
        print(f"{r['k']}+{r['r']:<4}{r['impl']:<42}{r['encode_GBps']:>9.2f}{r['decode_GBps']:>9.2f}")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}; load average {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
