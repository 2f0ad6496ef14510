"""HTTP throughput and latency of ``dartboost serve`` on loopback, and a poisoning run.

The server is the real stack (``python -m dartboost.serving.cli``: uvicorn,
Starlette, a CodedPool) in its own process, serving a saved DartClassifier
(.dbm file, no pickles). The load generator is a separate process running one
asyncio task per connection, each with one request in flight (keep-alive,
closed loop), for 1-row and 100-row requests at 1, 8 and 64 connections.
Every response is checked (status 200 and the number of predictions);
anything else is an error (a 429 from the concurrency limit is counted apart).

Three server configurations: the default (small concurrent requests merged
into one pool request by the micro-batcher), ``--no-micro-batch`` (every
request its own pool request), and ``--max-concurrency 16`` at 64 connections
(excess requests get a fast 429 instead of queueing). Per point it also
records where the time goes: the server's own handler latency (from its
Prometheus histogram, bucket upper bounds), the load generator's event-loop
wake-up delay (its own queueing), and Little's law's mean latency
(connections / throughput), which no scheduling can beat in a closed loop.

Poisoning run: one connection sends bodies with ``Infinity`` / ``1e999`` /
400-digit numbers while the others send valid rows; the valid ones must all
succeed (and the poisoned ones all get 400).

Client and server share the host's cores (2 on the project's machine, which
other jobs use too), so the numbers are a lower bound for the server alone;
the JSON records the load average.

Usage::

    python benchmarks/bench_http.py            # ~2.5 min (3 runs per point, medians)
    python benchmarks/bench_http.py --quick    # ~20 s
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

POISON = [b'{"instances": [[Infinity' + b', 0.0' * 19 + b"]]}",
          b'{"instances": [[1e999' + b', 0.0' * 19 + b"]]}",
          b'{"instances": [[' + b"9" * 400 + b', 0.0' * 19 + b"]]}",
          b'{"instances": [[NaN' + b', 0.0' * 19 + b"]]}"]


def _request(body):
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    return status, body


async def _connection(port, bodies, n_rows, duration, lat, errors, expect_ok, ok_lat):
    import socket

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    end = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < end:
        req = _request(bodies[i % len(bodies)])
        i += 1
        t0 = time.perf_counter()
        writer.write(req)
        try:
            status, body = await _read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            errors.append("connection")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        lat.append(time.perf_counter() - t0)
        if status == 200:
            ok_lat.append(lat[-1])
        if expect_ok:
            if status != 200 or len(json.loads(body)["predictions"]) != n_rows:
                errors.append(status)
        elif status != 400:
            errors.append(status)
    writer.close()


async def _loop_lag(duration, lags):
    """How late the load generator's own event loop wakes up (its share of the latency)."""
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)


def _client(port, bodies, n_rows, conns, duration, poison, queue):
    async def main():
        lat, errors, plat, perrors, lags, ok_lat = [], [], [], [], [], []
        tasks = [_connection(port, bodies, n_rows, duration, lat, errors, True, ok_lat)
                 for _ in range(conns)]
        if poison:
            tasks.append(_connection(port, POISON, 1, duration, plat, perrors, False, []))
        tasks.append(_loop_lag(duration, lags))
        await asyncio.gather(*tasks)
        return lat, errors, plat, perrors, lags, ok_lat

    t0 = time.perf_counter()
    lat, errors, plat, perrors, lags, ok_lat = asyncio.run(main())
    queue.put({"lat": lat, "errors": [str(e) for e in errors], "wall": time.perf_counter() - t0,
               "poison_n": len(plat), "poison_errors": [str(e) for e in perrors],
               "client_lag": lags, "ok_lat": ok_lat})


def _server_histogram(port):
    """Cumulative counts of the server's /predict latency histogram (Prometheus text)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("dartboost_http_request_duration_seconds_bucket") and \
                'endpoint="predict"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _histogram_quantile(before, after, q):
    """Upper bucket bound holding quantile q of the requests between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for b, c in zip(bounds, counts):
        if c >= q * total:
            return b * 1e3
    return None


def run_point(port, X, n_rows, conns, duration, poison=False):
    rng = np.random.default_rng(n_rows * 1000 + conns)
    bodies = [json.dumps({"instances": X[rng.integers(0, len(X), n_rows)].tolist()}).encode()
              for _ in range(64)]
    hist0 = _server_histogram(port)
    q = multiprocessing.get_context("spawn").Queue()
    p = multiprocessing.get_context("spawn").Process(
        target=_client, args=(port, bodies, n_rows, conns, duration, poison, q))
    p.start()
    res = q.get(timeout=duration + 120)
    p.join(30)
    hist1 = _server_histogram(port)
    lat = np.asarray(res["lat"]) * 1e3
    lag = np.asarray(res["client_lag"]) * 1e3
    rejected = sum(e == "429" for e in res["errors"])
    out = {"rows": n_rows, "connections": conns, "requests": int(lat.size),
           "req_per_s": lat.size / duration, "rows_per_s": lat.size * n_rows / duration,
           "ok_per_s": (lat.size - len(res["errors"])) / duration,
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
           "max_ms": float(lat.max()), "errors": len(res["errors"]) - rejected,
           "ok_p99_ms": float(np.percentile(res["ok_lat"], 99)) * 1e3 if res["ok_lat"] else None,
           "rejected_429": rejected,
           # Little's law: with `conns` requests always in flight, mean latency = conns / rate.
           "littles_law_mean_ms": conns / max(lat.size / duration, 1e-9) * 1e3,
           "mean_ms": float(lat.mean()),
           # Where the time goes: inside the server's handler (Prometheus buckets, upper
           # bounds) against the client's own event-loop wake-up delay.
           "server_handler_p50_ms": _histogram_quantile(hist0, hist1, 0.5),
           "server_handler_p99_ms": _histogram_quantile(hist0, hist1, 0.99),
           "client_loop_lag_p50_ms": float(np.percentile(lag, 50)) if lag.size else None,
           "client_loop_lag_p99_ms": float(np.percentile(lag, 99)) if lag.size else None,
           "loadavg_1min": os.getloadavg()[0]}
    if poison:
        out["poison_requests"] = res["poison_n"]
        out["poison_not_400"] = len(res["poison_errors"])
    return out


def start_server(model_path, args, extra=()):
    env = dict(os.environ)
    root = os.path.dirname(HERE)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "dartboost.serving.cli", model_path, "--port", "0",
           "--workers", str(args.workers), "--backend", args.backend,
           "--batch-size", str(args.batch_size), "--max-batch-delay", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    line = ""
    deadline = time.monotonic() + 120
    while "http://" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("server exited at start")
    return proc, int(line.rsplit(":", 1)[1].split()[0])


def _median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return float(np.median(vals)) if vals else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per point")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per point; the table gives medians (the host is shared)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="thread", choices=["thread", "process"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(RESULTS, "http.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 1.5, 1
    from sklearn.datasets import make_classification

    from dartboost import DartClassifier
    from dartboost.store import save

    X, y = make_classification(n_samples=4000, n_features=20, random_state=0)
    model = DartClassifier(n_estimators=100, n_jobs=1, random_state=0).fit(X, y)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "model.dbm")
    save(model, path)
    # Server configurations: the default (micro-batching on), the same without it
    # (what the issue measured), and the default with a small concurrency limit
    # (excess requests get a fast 429 instead of queueing).
    configs = [("micro_batch", [], [(r, c) for r in (1, 100) for c in (1, 8, 64)]),
               ("no_micro_batch", ["--no-micro-batch"], [(1, c) for c in (1, 8, 64)]),
               ("limit_16", ["--max-concurrency", "16"], [(1, 64)])]
    if args.quick:
        configs = [(n, e, [p for p in pts if p[1] != 8]) for n, e, pts in configs]
    points, poison = [], None
    t_all = time.perf_counter()
    for config, extra, grid in configs:
        proc, port = start_server(path, args, extra)
        try:
            for rows, conns in grid:
                runs = [run_point(port, X, rows, conns, args.duration)
                        for _ in range(args.repeats)]
                p = {key: _median(runs, key) for key in
                     ("req_per_s", "ok_per_s", "rows_per_s", "p50_ms", "p99_ms", "ok_p99_ms",
                      "max_ms", "mean_ms", "littles_law_mean_ms", "server_handler_p50_ms",
                      "server_handler_p99_ms", "client_loop_lag_p50_ms",
                      "client_loop_lag_p99_ms", "loadavg_1min")}
                p.update(config=config, rows=rows, connections=conns,
                         errors=sum(r["errors"] for r in runs),
                         rejected_429=sum(r["rejected_429"] for r in runs),
                         requests=sum(r["requests"] for r in runs),
                         req_per_s_range=[min(r["req_per_s"] for r in runs),
                                          max(r["req_per_s"] for r in runs)],
                         p99_ms_range=[min(r["p99_ms"] for r in runs),
                                       max(r["p99_ms"] for r in runs)],
                         runs=runs)
                points.append(p)
                print(f"{config:15s} rows={rows:3d} conns={conns:2d} {p['req_per_s']:6.0f} req/s "
                      f"({p['req_per_s_range'][0]:.0f}-{p['req_per_s_range'][1]:.0f}) "
                      f"p50={p['p50_ms']:6.2f} p99={p['p99_ms']:6.2f} ms "
                      f"({p['p99_ms_range'][0]:.1f}-{p['p99_ms_range'][1]:.1f}) "
                      f"mean={p['mean_ms']:.1f} (64/X law {p['littles_law_mean_ms']:.1f}) "
                      f"server p99<={p['server_handler_p99_ms']} client lag p99="
                      f"{p['client_loop_lag_p99_ms']:.1f} 429={p['rejected_429']} "
                      f"errors={p['errors']} load={p['loadavg_1min']:.1f}", flush=True)
            if config == "micro_batch":
                poison = run_point(port, X, 1, 7, args.duration, poison=True)
                print(f"poisoning: {poison['requests']} valid requests, {poison['errors']} "
                      f"failed; {poison['poison_requests']} poisoned, "
                      f"{poison['poison_not_400']} not 400", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    out = {"host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": platform.platform(), "shared": True},
           "config": {"duration_s": args.duration, "repeats": args.repeats,
                      "workers": args.workers,
                      "backend": args.backend, "batch_size": args.batch_size,
                      "model": "DartClassifier(n_estimators=100), 20 features"},
           "points": points, "poisoning": poison, "wall_s": time.perf_counter() - t_all}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
