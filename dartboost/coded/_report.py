"""Degraded-mode evaluation of coded predictors and parity ensembles.

Metrics follow ParM and the learned-codes paper: *available* accuracy A_a
(base model vs label), *degraded-mode* accuracy A_d (decoded prediction vs
label, counted on the erased slot, averaged over all k erasure positions),
*reconstruction* accuracy (decoded vs the base's own prediction), overall
accuracy at unavailability fraction f, ``(1 - f) A_a + f A_d``, and the
default-prediction baseline. Regression gets the RMSE counterparts.
"""

import itertools
import time

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from ._codes import raw_output

__all__ = ["degraded_mode_report", "model_size"]


def model_size(est):
    """Size of a fitted model as ``{"trees": n}`` or ``{"params": n}`` (best effort).

    Trees are counted for tree ensembles (scikit-learn, dartboost) and
    parameters for neural networks, linear models and torch modules. Returns
    an empty dict for models it does not know.
    """
    if hasattr(est, "estimators_") and hasattr(est, "estimator") and not hasattr(est, "coefs_"):
        # MultiOutputRegressor and similar wrappers: add up their members.
        sizes = [model_size(e) for e in est.estimators_]
        if sizes and all(sizes):
            key = next(iter(sizes[0]))
            if all(key in s for s in sizes):
                return {key: int(sum(s[key] for s in sizes))}
    if hasattr(est, "regressor_"):  # TransformedTargetRegressor
        return model_size(est.regressor_)
    if hasattr(est, "steps"):  # Pipeline: the final estimator
        return model_size(est.steps[-1][1])
    if hasattr(est, "module_") and hasattr(est.module_, "parameters"):  # dartboost.gpu Neural*
        return model_size(est.module_)
    if hasattr(est, "parameters") and callable(est.parameters):  # torch.nn.Module
        return {"params": int(sum(p.numel() for p in est.parameters()))}
    if hasattr(est, "coefs_"):
        return {"params": int(sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_))}
    for attr in ("n_trees_", "n_trees"):
        if isinstance(getattr(est, attr, None), (int, np.integer)):
            return {"trees": int(getattr(est, attr))}
    if hasattr(est, "n_iter_") and hasattr(est, "n_trees_per_iteration_"):
        # dartboost and HistGradientBoosting*: trees per iteration x iterations
        return {"trees": int(est.n_iter_) * int(est.n_trees_per_iteration_)}
    if hasattr(est, "estimators_"):
        e = est.estimators_
        return {"trees": int(np.asarray(e, dtype=object).size)}
    if hasattr(est, "tree_"):
        return {"trees": 1}
    if hasattr(est, "coef_"):
        return {"params": int(np.size(est.coef_) + np.size(getattr(est, "intercept_", 0)))}
    return {}


def _time_per_row(fn, X, repeat=3):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(X)
        best = min(best, time.perf_counter() - t0)
    return best / max(len(X), 1)


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def _overall(a_avail, a_deg, fractions, regression):
    if regression:
        # Mix squared errors, not RMSEs: overall RMSE at unavailability f.
        return {str(f): float(np.sqrt((1 - f) * a_avail**2 + f * a_deg**2)) for f in fractions}
    return {str(f): float((1 - f) * a_avail + f * a_deg) for f in fractions}


def _groups(X, y, k, rng):
    m = X.shape[0] // k
    if m < 1:
        raise ValueError(f"need at least k={k} rows to form a group, got {X.shape[0]}.")
    perm = rng.permutation(X.shape[0])[: m * k].reshape(k, m)
    return X[perm], (None if y is None else np.asarray(y)[perm])


def degraded_mode_report(coded, X, y=None, *, fractions=(0.01, 0.05, 0.1, 0.2),
                         n_lost=1, backup=None, random_state=0, timing=True):
    """Evaluate how well a code rebuilds unavailable predictions.

    Parameters
    ----------
    coded : fitted CodedPredictor, LearnedCode or ParityEnsemble
    X : array-like of shape (n_samples, n_features)
        Held-out queries. For coded predictors they are split at random into
        ``n_samples // k`` groups of k.
    y : array-like of shape (n_samples,) or (n_samples, d), default=None
        Labels or targets; without them only reconstruction metrics are given.
    fractions : sequence of float, default=(0.01, 0.05, 0.1, 0.2)
        Unavailability fractions f for the overall accuracy.
    n_lost : int, default=1
        Coded predictors only: slots erased at once; every set of ``n_lost``
        of the k slots is erased in turn and A_d / reconstruction are scored
        on all erased slots. Above ``r`` this measures the
        ``on_unrecoverable`` fallback (which must then be ``"default"``).
    backup : fitted estimator, default=None
        A backup model to compare with, side by side, on the same lost
        queries (for a coded predictor, e.g. :func:`equal_cost_backup`: it
        answers a lost query on its own; the report's ``backup`` entry holds
        its degraded-mode scores and ``cost`` its size and compute per query
        beside the parity's). For a parity ensemble: a distilled backup of
        the whole ensemble
        (predicting its combined raw output) to compare against.
    random_state : int, RandomState or None, default=0
        Grouping of the rows.
    timing : bool, default=True
        Measure per-row latency of base and parity computations.

    Returns
    -------
    report : dict
        JSON-serialisable. For classification: ``A_a``, ``A_d``,
        ``reconstruction_accuracy``, ``default_accuracy``, ``overall``
        (f -> accuracy). For regression: ``rmse_available``,
        ``rmse_degraded``, ``reconstruction_rmse``, ``reconstruction_r2``,
        ``default_rmse``, ``overall_rmse``. Always ``k``, ``r``, ``task``,
        ``n_groups`` and ``cost`` (sizes and per-row latencies of base and
        parity, and their ratios).
    """
    from ._ensemble import ParityEnsemble

    check_is_fitted(coded, "n_outputs_")
    X = check_array(X, dtype=np.float64)
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"unavailability fractions must lie in [0, 1], got {f}.")
    if y is not None and len(y) != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}.")
    rng = check_random_state(random_state)
    if isinstance(coded, ParityEnsemble):
        if n_lost != 1:
            raise ValueError("a ParityEnsemble report erases one member at a time (n_lost=1).")
        return _ensemble_report(coded, X, y, fractions, backup, timing)
    if not isinstance(n_lost, (int, np.integer)) or not 1 <= n_lost <= coded.k:
        raise ValueError(f"n_lost must be an integer in [1, k={coded.k}], got {n_lost!r}.")
    return _coded_report(coded, X, y, fractions, rng, timing, int(n_lost), backup)


def _coded_report(coded, X, y, fractions, rng, timing, n_lost=1, backup=None):
    k, r, d = coded.k, coded.r, coded.n_outputs_
    X_group, y_group = _groups(X, y, k, rng)
    m = X_group.shape[1]
    base = raw_output(coded.base_estimator, X_group.reshape(k * m, -1)).reshape(k, m, d)
    P = coded.encode(X_group)
    parity = np.stack([coded.parity_predict(P, j) for j in range(r)])
    # Erase every set of n_lost slots in turn (all other slots and all
    # parities answer) and score the decoded outputs of the erased slots.
    dec, ref, lab, amps, bk = [], [], [], [], []
    bk_all = None if backup is None else raw_output(backup, X_group.reshape(k * m, -1)).reshape(
        k, m, -1)
    if bk_all is not None and bk_all.shape[2] != d:
        raise ValueError(f"backup raw outputs have {bk_all.shape[2]} columns, the base's {d}.")
    refused = 0
    for lost in itertools.combinations(range(k), n_lost):
        available = np.ones(k + r, dtype=bool)
        available[list(lost)] = False
        amps.append(coded.decode_amplification(available))
        refused += not coded.can_decode(available)
        out, _ = coded.decode(base, parity, available)
        for j in lost:
            dec.append(out[j])
            ref.append(base[j])
            if bk_all is not None:
                bk.append(bk_all[j])
            if y_group is not None:
                lab.append(y_group[j])
    decoded, ref = np.stack(dec), np.stack(ref)
    default = np.broadcast_to(coded.default_output_, base.shape)
    classification = is_classifier(coded.base_estimator)
    rep = {"k": k, "r": r, "n_lost": n_lost, "n_groups": int(m), "n_queries": int(k * m),
           "task": "classification" if classification else "regression",
           # How much decoding multiplies the parity models' error, over the
           # erasure patterns scored; refused patterns fall back to the default.
           "decode_amplification": {"max": float(np.max(amps)), "mean": float(np.mean(amps)),
                                    "patterns": len(amps), "patterns_refused": int(refused)}}
    pred_base = coded.outputs_to_prediction(base)
    pred_ref = coded.outputs_to_prediction(ref)
    pred_dec = coded.outputs_to_prediction(decoded)
    pred_def = coded.outputs_to_prediction(default)
    if bk:
        backed = np.stack(bk)
        pred_bk = coded.outputs_to_prediction(backed)
        rep["backup"] = {}
    if classification:
        rep["reconstruction_accuracy"] = float(np.mean(pred_dec == pred_ref))
        if bk:
            rep["backup"]["reconstruction_accuracy"] = float(np.mean(pred_bk == pred_ref))
        if y_group is not None:
            y_lost = np.stack(lab)
            rep["A_a"] = float(np.mean(pred_base == y_group))
            rep["A_d"] = float(np.mean(pred_dec == y_lost))
            rep["default_accuracy"] = float(np.mean(pred_def == y_group))
            rep["overall"] = _overall(rep["A_a"], rep["A_d"], fractions, False)
            if bk:
                rep["backup"]["A_d"] = float(np.mean(pred_bk == y_lost))
                rep["backup"]["overall"] = _overall(rep["A_a"], rep["backup"]["A_d"],
                                                    fractions, False)
    else:
        err = ((decoded - ref) ** 2).mean()
        var = base.reshape(-1, d).var(axis=0).mean()
        rep["reconstruction_rmse"] = _rmse(decoded, ref)
        rep["reconstruction_r2"] = float(1.0 - err / var) if var > 0 else float("nan")
        if bk:
            rep["backup"]["reconstruction_rmse"] = _rmse(backed, ref)
            rep["backup"]["reconstruction_r2"] = (
                float(1.0 - ((backed - ref) ** 2).mean() / var) if var > 0 else float("nan"))
        if y_group is not None:
            yg = np.asarray(y_group, dtype=float).reshape(pred_base.shape)
            y_lost = np.asarray(np.stack(lab), dtype=float).reshape(pred_dec.shape)
            rep["rmse_available"] = _rmse(pred_base, yg)
            rep["rmse_degraded"] = _rmse(pred_dec, y_lost)
            rep["default_rmse"] = _rmse(pred_def, yg)
            rep["overall_rmse"] = _overall(rep["rmse_available"], rep["rmse_degraded"],
                                           fractions, True)
            if bk:
                rep["backup"]["rmse_degraded"] = _rmse(pred_bk, y_lost)
    rep["cost"] = _coded_cost(coded, X_group, P, timing, backup)
    return rep


def _coded_cost(coded, X_group, P, timing, backup=None):
    cost = {"base_size": model_size(coded.base_estimator)}
    parity_models = getattr(coded, "parity_estimators_", None)
    key = next(iter(cost["base_size"]), None)
    if parity_models is not None:
        sizes = [model_size(p) for p in parity_models]
        cost["parity_size"] = sizes[0] if len(sizes) == 1 else sizes
        if key and all(key in s for s in sizes):
            cost["parity_to_base_size"] = float(sum(s[key] for s in sizes)) / max(
                cost["base_size"][key], 1)
            # r parity models answer one query per group of k.
            cost[f"parity_{key}_per_query"] = float(sum(s[key] for s in sizes)) / coded.k
    if backup is not None:
        cost["backup_size"] = model_size(backup)
        if key and key in cost["backup_size"]:
            cost[f"backup_{key}_per_query"] = float(cost["backup_size"][key])
    elif hasattr(coded, "codec_size"):
        cost["codec_size"] = coded.codec_size()
    if timing:
        Xb = X_group[0]
        t_base = _time_per_row(coded.base_predict_raw, Xb)
        t_par = sum(_time_per_row(lambda Q, j=j: coded.parity_predict(Q, j), P[j])
                    for j in range(coded.r))
        cost["base_latency_per_row_s"] = t_base
        cost["parity_latency_per_row_s"] = t_par
        cost["parity_to_base_latency"] = t_par / t_base if t_base > 0 else float("nan")
        # Per query: the parities run once per group, a backup on every query.
        cost["parity_latency_per_query_s"] = t_par / coded.k
        if backup is not None:
            cost["backup_latency_per_query_s"] = _time_per_row(
                lambda Q: raw_output(backup, Q), Xb)
    return cost


def _ensemble_report(pe, X, y, fractions, backup, timing):
    k, r = pe.k, pe.r
    outs = pe.member_outputs(X)  # (k, n, d)
    parity = np.stack([pe.parity_predict(X, j) for j in range(r)])
    full = pe.combine_outputs(outs)
    pred_full = pe.outputs_to_prediction(full)
    rows = {"decoded": [], "drop_member": []}
    for j in range(k):
        available = np.ones(k + r, dtype=bool)
        available[j] = False
        dec, _ = pe.decode(outs, parity, available)
        rows["decoded"].append(pe.combine_outputs(dec))
        rows["drop_member"].append(pe.combine_outputs(outs, available=available[:k]))
    n_backup = None
    if backup is not None:
        b = raw_output(backup, X)
        if b.shape != full.shape:
            raise ValueError(f"backup outputs have shape {b.shape}, expected {full.shape}.")
        rows["backup"] = [b] * k
        n_backup = model_size(backup)
    classification = pe._is_classifier()
    rep = {"k": k, "r": r, "n_queries": int(X.shape[0]), "combine": pe.combine,
           "task": "classification" if classification else "regression"}
    preds = {name: [pe.outputs_to_prediction(o) for o in v] for name, v in rows.items()}
    if classification:
        rep["agreement"] = {n: float(np.mean([np.mean(p == pred_full) for p in v]))
                            for n, v in preds.items()}
        if y is not None:
            y = np.asarray(y)
            rep["A_a"] = float(np.mean(pred_full == y))
            rep["A_d"] = {n: float(np.mean([np.mean(p == y) for p in v])) for n, v in preds.items()}
            # The mean over erasure positions hides a member that matters most.
            rep["A_d_worst"] = {n: float(min(np.mean(p == y) for p in v))
                                for n, v in preds.items()}
            rep["overall"] = {n: _overall(rep["A_a"], a, fractions, False)
                              for n, a in rep["A_d"].items()}
    else:
        rep["reconstruction_rmse"] = {n: float(np.mean([_rmse(p, pred_full) for p in v]))
                                      for n, v in preds.items()}
        if y is not None:
            yv = np.asarray(y, dtype=float).reshape(pred_full.shape)
            rep["rmse_available"] = _rmse(pred_full, yv)
            rep["rmse_degraded"] = {n: float(np.mean([_rmse(p, yv) for p in v]))
                                    for n, v in preds.items()}
            rep["rmse_degraded_worst"] = {n: float(max(_rmse(p, yv) for p in v))
                                          for n, v in preds.items()}
            rep["overall_rmse"] = {n: _overall(rep["rmse_available"], a, fractions, True)
                                   for n, a in rep["rmse_degraded"].items()}
    cost = {"member_sizes": [model_size(mb) for mb in pe.members],
            "parity_size": [model_size(p) for p in pe.parity_estimators_]}
    if n_backup is not None:
        cost["backup_size"] = n_backup
    if timing:
        cost["member_latency_per_row_s"] = [
            _time_per_row(lambda Q, mb=mb: raw_output(mb, Q), X) for mb in pe.members]
        cost["parity_latency_per_row_s"] = [
            _time_per_row(lambda Q, j=j: pe.parity_predict(Q, j), X) for j in range(r)]
        if backup is not None:
            cost["backup_latency_per_row_s"] = _time_per_row(lambda Q: raw_output(backup, Q), X)
    rep["cost"] = cost
    return rep
