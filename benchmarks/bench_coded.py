"""Benchmark coded prediction: how well are unavailable predictions rebuilt?

Runs, for k in {2, 3, 4} (r = 1):

(a) ParM with an MLP base and an MLP parity model of the same architecture
    (scikit-learn MLPs; the parity trained longer on standardised targets),
    encoders "image"/"concat" (digits) or "concat"/"sum" (tabular);
(a'') the same with r = 2 at k = 4, one and two slots lost;
(b) a DART base (dartboost) with a DART parity model at the same tree budget
    (concat encoder), the library's default parity (2x the trees) beside an
    equal-cost backup trained on the labels, and a parity-budget sweep at k = 2;
(c) learned codes (torch encoder/decoder, the MLP base run on the parity);
(a', c') on digits also a torch CNN base (dartboost.gpu) with a CNN parity model
    on the image code, and a learned code around the CNN;
(d) parity ensembles: a bagged DART ensemble and a DART model split into tree
    ranges, against dropping the member and against a distilled backup;

on scikit-learn's handwritten digits (8x8 images), a tabular classification
set (make_classification) and a tabular regression set (make_friedman1).
Prints tables and writes ``benchmarks/results/coded.json`` and the plot
``benchmarks/results/coded_ad_vs_k.png``.

Usage::

    python benchmarks/bench_coded.py            # full run (~10 min on 2 busy cores)
    python benchmarks/bench_coded.py --quick    # smoke run
"""

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_digits, make_classification, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from dartboost import DartClassifier, DartRegressor
from dartboost.coded import (
    CodedPredictor,
    ImageConcatEncoder,
    LearnedCode,
    ParityEnsemble,
    TreeRangeShard,
    degraded_mode_report,
    equal_cost_backup,
    raw_output,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def datasets(quick):
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.33, random_state=0,
                                          stratify=y)
    out = {"digits": ("classification", Xtr, Xte, ytr, yte)}
    n = 3000 if quick else 4500
    X, y = make_classification(n_samples=n, n_features=20, n_informative=10, n_classes=3,
                               random_state=0)
    out["tabular_clf"] = ("classification",) + tuple(
        train_test_split(X, y, test_size=1 / 3, random_state=0))
    X, y = make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()  # standardised target: RMSEs in units of std(y)
    out["tabular_reg"] = ("regression",) + tuple(
        train_test_split(X, y, test_size=1 / 3, random_state=0))
    return out


def mlp_base(task, quick):
    # max_iter carries over to the parity MLP (same family and settings).
    kw = dict(max_iter=60 if quick else 100, random_state=0)
    if task == "classification":
        return MLPClassifier((64,), **kw)
    return MLPRegressor(hidden_layer_sizes=(64,), **kw)


def parity_mlp(quick):
    """The MLP parity model: the base's architecture, trained longer, on standardised targets.

    Sums of k logits are a harder regression target than the base's own
    classification problem: with the base's 100 epochs and unscaled targets
    the parity underfits badly (digits, image code, k=2: 57% reconstruction
    instead of 93%), so, like ParM, we give the parity more training.
    """
    return TransformedTargetRegressor(
        MLPRegressor(hidden_layer_sizes=(64,), max_iter=100 if quick else 500, random_state=0),
        transformer=StandardScaler())


def dart_params(quick):
    return dict(n_estimators=30 if quick else 60, learning_rate=0.1, max_leaf_nodes=15,
                min_samples_leaf=10, n_jobs=1, random_state=0)


def summary(rep):
    """The headline numbers of a report."""
    keys = ("A_a", "A_d", "reconstruction_accuracy", "default_accuracy", "rmse_available",
            "rmse_degraded", "reconstruction_rmse", "reconstruction_r2", "default_rmse")
    s = {k: rep[k] for k in keys if k in rep}
    c = rep.get("cost", {})
    for k in ("parity_to_base_size", "parity_to_base_latency"):
        if k in c:
            s[k] = c[k]
    return s


def fmt(s):
    if "A_a" in s:
        return (f"A_a {s['A_a']:.3f}  A_d {s['A_d']:.3f}  recon {s['reconstruction_accuracy']:.3f}"
                f"  default {s['default_accuracy']:.3f}")
    return (f"RMSE avail {s['rmse_available']:.3f}  degraded {s['rmse_degraded']:.3f}  "
            f"recon RMSE {s['reconstruction_rmse']:.3f} (R2 {s['reconstruction_r2']:.3f})  "
            f"default {s['default_rmse']:.3f}")


def run_parm_mlp(name, task, Xtr, Xte, ytr, yte, ks, quick, log):
    base = mlp_base(task, quick).fit(Xtr, ytr)
    encoders = (["image", "concat"] if name == "digits" else ["concat", "sum"])
    rows = []
    for enc in encoders:
        for k in ks:
            e = ImageConcatEncoder((8, 8)) if enc == "image" else enc
            t0 = time.perf_counter()
            # ParM trains on many random groupings of the training rows.
            cp = CodedPredictor(base, k=k, encoder=e, parity_estimator=parity_mlp(quick),
                                random_state=0).fit(Xtr)
            fit_s = time.perf_counter() - t0
            s = summary(degraded_mode_report(cp, Xte, yte))
            s.update(method="parm_mlp", encoder=enc, k=k, parity_fit_s=fit_s)
            rows.append(s)
            log(f"  ParM MLP  {enc:6s} k={k}: {fmt(s)}  (parity fit {fit_s:.1f}s)")
    # r = 2: two parities (weighted codes, least-squares decoder), two slots lost
    t0 = time.perf_counter()
    cp = CodedPredictor(base, k=4, r=2, encoder="concat", parity_estimator=parity_mlp(quick),
                        random_state=0).fit(Xtr)
    fit_s = time.perf_counter() - t0
    for n_lost in (1, 2):
        s = summary(degraded_mode_report(cp, Xte, yte, n_lost=n_lost))
        s.update(method="parm_mlp_r2", encoder="concat", k=4, r=2, n_lost=n_lost,
                 parity_fit_s=fit_s)
        rows.append(s)
        log(f"  ParM MLP  concat k=4 r=2, {n_lost} lost: {fmt(s)}  (parity fit {fit_s:.1f}s)")
    return base, rows


def run_parm_dart(name, task, Xtr, Xte, ytr, yte, ks, quick, log):
    params = dart_params(quick)
    Est = DartClassifier if task == "classification" else DartRegressor
    t0 = time.perf_counter()
    base = Est(**params).fit(Xtr, ytr)
    base_fit = time.perf_counter() - t0
    rows = []
    for k in ks:
        t0 = time.perf_counter()
        # The base's own budget (1x), explicitly: the default parity now has 2x.
        par = DartRegressor(**params)
        cp = CodedPredictor(base, k=k, encoder="concat", parity_estimator=par,
                            n_groups=2 * len(Xtr), random_state=0).fit(Xtr)
        fit_s = time.perf_counter() - t0
        s = summary(degraded_mode_report(cp, Xte, yte))
        s.update(method="parm_dart", encoder="concat", k=k, parity_budget=1.0,
                 base_fit_s=base_fit, parity_fit_s=fit_s)
        rows.append(s)
        log(f"  ParM DART concat k={k}: {fmt(s)}  (parity fit {fit_s:.1f}s)")
    # The library's defaults (concat code, 2x the base's trees, two groups per row) beside
    # an equal-cost backup: 1/k of the parity's trees, trained on the labels, run on every query.
    for k in ks:
        t0 = time.perf_counter()
        cp = CodedPredictor(base, k=k, random_state=0).fit(Xtr)
        fit_s = time.perf_counter() - t0
        backup = equal_cost_backup(cp, Xtr, ytr, random_state=0)
        rep = degraded_mode_report(cp, Xte, yte, backup=backup)
        s = summary(rep)
        s.update(method="parm_dart_default", encoder="concat", k=k, parity_budget=2.0,
                 parity_fit_s=fit_s, backup=rep["backup"],
                 parity_trees_per_query=rep["cost"].get("parity_trees_per_query"),
                 backup_trees_per_query=rep["cost"].get("backup_trees_per_query"))
        rows.append(s)
        bk = rep["backup"]
        bk_txt = (f"A_d {bk['A_d']:.3f}" if "A_d" in bk else f"RMSE {bk['rmse_degraded']:.3f}")
        log(f"  ParM DART default k={k}: {fmt(s)}  | equal-cost backup {bk_txt}"
            f"  (parity fit {fit_s:.1f}s)")
    # A_d against the parity's tree budget (k = 2)
    for mult in ([0.5, 2.0] if quick else [0.25, 0.5, 2.0, 4.0]):
        n_est = max(1, int(round(params["n_estimators"] * mult)))
        par = DartRegressor(**{**params, "n_estimators": n_est})
        cp = CodedPredictor(base, k=2, encoder="concat", parity_estimator=par,
                            n_groups=2 * len(Xtr), random_state=0).fit(Xtr)
        s = summary(degraded_mode_report(cp, Xte, yte, timing=False))
        s.update(method="parm_dart_budget", encoder="concat", k=2, parity_budget=mult)
        rows.append(s)
        log(f"  ParM DART budget x{mult:<4} k=2: {fmt(s)}")
    return base, rows


def run_cnn_digits(Xtr, Xte, ytr, yte, ks, quick, log):
    """ParM as published for images: CNN base, CNN parity on downsampled-and-tiled images."""
    from dartboost.gpu import NeuralClassifier, NeuralRegressor

    arch = dict(hidden_layer_sizes=(64,), architecture="cnn", image_shape=(8, 8),
                conv_channels=(16, 32), device="cpu", random_state=0)
    t0 = time.perf_counter()
    base = NeuralClassifier(max_iter=10 if quick else 40, **arch).fit(Xtr, ytr)
    base_fit = time.perf_counter() - t0
    rows = []
    for k in ks:
        t0 = time.perf_counter()
        par = NeuralRegressor(max_iter=20 if quick else 100, **arch)
        cp = CodedPredictor(base, k=k, encoder=ImageConcatEncoder((8, 8)), parity_estimator=par,
                            random_state=0).fit(Xtr)
        fit_s = time.perf_counter() - t0
        s = summary(degraded_mode_report(cp, Xte, yte))
        s.update(method="parm_cnn", encoder="image", k=k, base_fit_s=base_fit, parity_fit_s=fit_s)
        rows.append(s)
        log(f"  ParM CNN  image  k={k}: {fmt(s)}  (parity fit {fit_s:.1f}s)")
    for row in run_learned("digits", "classification", base, Xtr, Xte, ytr, yte, ks, quick, log,
                           label="Learned code CNN"):
        row["method"] = "learned_cnn"
        rows.append(row)
    return rows


def run_learned(name, task, base, Xtr, Xte, ytr, yte, ks, quick, log, label="Learned code"):
    rows = []
    for k in ks:
        t0 = time.perf_counter()
        lc = LearnedCode(base, k=k, loss="kl" if task == "classification" else "mse",
                         epochs=10 if quick else 30, batch_size=64, random_state=0).fit(Xtr)
        fit_s = time.perf_counter() - t0
        rep = degraded_mode_report(lc, Xte, yte)
        s = summary(rep)
        s.update(method="learned", k=k, fit_s=fit_s, **rep["cost"].get("codec_size", {}))
        rows.append(s)
        log(f"  {label:16s} k={k}: {fmt(s)}  (fit {fit_s:.1f}s)")
    return rows


def run_ensembles(name, task, Xtr, Xte, ytr, yte, quick, log):
    """Parity members for (1) a bagged DART ensemble, (2) a DART model in tree ranges."""
    params = dart_params(quick)
    Est = DartClassifier if task == "classification" else DartRegressor
    rows = []
    k = 4
    # (1) bagging: k members on bootstrap samples, soft-voted in margin space
    rng = np.random.RandomState(0)
    members = []
    for i in range(k):
        idx = rng.randint(0, len(Xtr), len(Xtr))
        members.append(Est(**{**params, "random_state": i}).fit(Xtr[idx], ytr[idx]))
    # (2) shards: one model of k * T trees served as k tree ranges of T trees
    T = params["n_estimators"]
    big = Est(**{**params, "n_estimators": k * T}).fit(Xtr, ytr)
    shards = [TreeRangeShard(big, i * T, (i + 1) * T, include_baseline=(i == 0)).fit()
              for i in range(k)]
    full_raw = raw_output(big, Xtr)
    backup = DartRegressor(**params).fit(Xtr, full_raw if full_raw.shape[1] > 1 else full_raw[:, 0])
    for label, mem, combine in (("bagging", members, "mean"), ("tree_ranges", shards, "sum")):
        pe = ParityEnsemble(mem, combine=combine, parity_estimator=DartRegressor(**params),
                            random_state=0).fit(Xtr)
        if combine == "mean":
            bk_raw = pe.combine_outputs(pe.member_outputs(Xtr))
            bk = DartRegressor(**params).fit(Xtr, bk_raw if bk_raw.shape[1] > 1 else bk_raw[:, 0])
        else:
            bk = backup
        rep = degraded_mode_report(pe, Xte, yte, backup=bk, timing=False)
        rep.update(method="parity_ensemble", ensemble=label)
        rows.append(rep)
        if "A_d" in rep:
            log(f"  ParityEnsemble {label:11s} k={k}: A_a {rep['A_a']:.3f}  A_d (worst) " +
                "  ".join(f"{n} {v:.3f} ({rep['A_d_worst'][n]:.3f})"
                          for n, v in rep["A_d"].items()))
        else:
            log(f"  ParityEnsemble {label:11s} k={k}: RMSE avail {rep['rmse_available']:.3f}  "
                "degraded (worst) " + "  ".join(
                    f"{n} {v:.3f} ({rep['rmse_degraded_worst'][n]:.3f})"
                    for n, v in rep["rmse_degraded"].items()))
    return rows


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4))
    styles = {("parm_mlp", "image"): ("ParM MLP, image", "C0"),
              ("parm_mlp", "concat"): ("ParM MLP, concat", "C1"),
              ("parm_mlp", "sum"): ("ParM MLP, sum", "C4"),
              ("parm_dart", "concat"): ("ParM DART, concat (equal trees)", "C2"),
              ("parm_dart_default", "concat"): ("ParM DART, default (2x trees)", "C7"),
              ("learned", None): ("learned code (MLP base)", "C3"),
              ("parm_cnn", "image"): ("ParM CNN base+parity, image", "C5"),
              ("learned_cnn", None): ("learned code (CNN base)", "C6")}
    for ax, name in zip(axes, names):
        rows = results["datasets"][name]["coded"]
        reg = results["datasets"][name]["task"] == "regression"
        key = "rmse_degraded" if reg else "A_d"
        for (method, enc), (label, color) in styles.items():
            pts = sorted((r["k"], r[key]) for r in rows
                         if r["method"] == method and r.get("encoder") == enc)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label, color=color)
        pts = sorted((r["k"], r["backup"][key]) for r in rows
                     if r["method"] == "parm_dart_default")
        if pts:
            ax.plot(*zip(*pts), marker="s", ls="--", color="C8",
                    label="equal-cost backup of the default DART parity")
        avail = [r for r in rows if r["method"] == "parm_mlp"][0]
        dart = [r for r in rows if r["method"] == "parm_dart"][0]
        a_key = "rmse_available" if reg else "A_a"
        d_key = "default_rmse" if reg else "default_accuracy"
        ax.axhline(avail[a_key], ls="--", c="k", lw=1, label="MLP base (available)")
        ax.axhline(dart[a_key], ls=":", c="k", lw=1, label="DART base (available)")
        ax.axhline(avail[d_key], ls="-.", c="gray", lw=1, label="default prediction")
        ax.set_xticks([2, 3, 4])
        ax.set_xlabel("k (queries per parity)")
        ax.set_ylabel("degraded-mode RMSE / std(y) (lower is better)" if reg
                      else "degraded-mode accuracy A_d")
        ax.set_title(name)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small, fast smoke run")
    ap.add_argument("--out", default=os.path.join(RESULTS, "coded.json"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    import torch

    torch.set_num_threads(1)
    ks = [2, 3, 4]
    t_start = time.perf_counter()
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "torch": torch.__version__},
               "settings": {"r": "1 unless a row says r=2", "ks": ks, "quick": args.quick,
                            "dart": dart_params(args.quick)},
               "datasets": {}}
    with threadpool_limits(1):
        for name, (task, Xtr, Xte, ytr, yte) in datasets(args.quick).items():
            print(f"== {name} ({task}, {len(Xtr)} train / {len(Xte)} test rows, "
                  f"{Xtr.shape[1]} features)")
            rows = []
            base, r_mlp = run_parm_mlp(name, task, Xtr, Xte, ytr, yte, ks, args.quick, print)
            rows += r_mlp
            _, r_dart = run_parm_dart(name, task, Xtr, Xte, ytr, yte, ks, args.quick, print)
            rows += r_dart
            rows += run_learned(name, task, base, Xtr, Xte, ytr, yte, ks, args.quick, print)
            if name == "digits":
                rows += run_cnn_digits(Xtr, Xte, ytr, yte, ks, args.quick, print)
            ens = run_ensembles(name, task, Xtr, Xte, ytr, yte, args.quick, print)
            results["datasets"][name] = {"task": task, "n_train": len(Xtr), "n_test": len(Xte),
                                         "n_features": int(Xtr.shape[1]), "coded": rows,
                                         "ensembles": ens}
    results["total_s"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    png = os.path.splitext(args.out)[0] + "_ad_vs_k.png"
    plot(results, png)
    print(f"wrote {args.out} and {png} in {results['total_s']:.0f}s")


if __name__ == "__main__":
    main()
