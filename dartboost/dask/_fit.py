"""Data-parallel boosting on Dask: the client runs the boosting loop once.

The loop mirrors :meth:`dartboost._boosting.BaseBoosting._run_iterations`
step for step, and draws from the same random streams in the same order
(``default_rng([seed, t])``: DART's drops, the row subsample, the feature
subsample, then the grower's per-node draws), so the model equals the one a
single machine trains on the concatenated partitions:

1. binning: the rows :class:`~dartboost._binning.BinMapper` would sample
   (the same seed and ``subsample``) are fetched from their partitions and the
   thresholds learned from them on the client;
2. each partition is binned where it lies and registered on its worker;
3. per iteration the scheme's decision (dropped iterations, new weight,
   scale) is taken on the client and sent to every worker, the workers
   compute gradients, and :class:`~dartboost.dask._grower.DistributedTreeGrower`
   grows each tree from per-partition histograms summed in partition order;
4. the workers add the new trees to their rows' scores.

A worker lost mid-fit: the fit resumes from the newest checkpoint of a
:class:`~dartboost.store.CheckpointCallback` in ``callbacks`` (else from
scratch) on the workers that remain, Dask recomputing the lost partitions.
"""
import numpy as np

from .._binning import BinMapper
from .._booster import Booster
from .._common import X_DTYPE, effective_n_threads
from .._model_format import FormatError
from .._losses import BinaryLogLoss, CustomObjective, Poisson, SoftmaxLogLoss, SquaredError
from .._ranking_loss import LambdaRankLoss
from ..callbacks import check_callbacks
from . import _worker
from ._distributed import DataLost, Rounds, WorkerLost, new_fit_id, split_by_partition
from ._grower import DistributedTreeGrower

#: Rows the binner learns thresholds from (BinMapper's default ``subsample``).
BIN_SUBSAMPLE = 200_000


def _mean_stats(y_enc, sw):
    """Weighted sums of every output and the total weight."""
    y2 = np.atleast_2d(np.asarray(y_enc, dtype=np.float64))
    if sw is None:
        return np.sum(y2, axis=1), float(y2.shape[1])
    return y2 @ sw, float(np.sum(sw))


class _ClassCounts:
    def __init__(self, n_classes):
        self.n_classes = n_classes

    def __call__(self, y_enc, sw):
        return np.bincount(np.asarray(y_enc, dtype=np.intp), weights=sw,
                           minlength=self.n_classes).astype(np.float64), None


def _no_statistics(y_enc, sw):
    return None


def baseline_statistics(loss, ranking=False):
    """The per-partition statistics a loss's baseline needs (a function of
    ``(y_enc, sw)``), or an error for a loss whose baseline or leaf values
    need global order statistics (quantiles). ``ranking``: a ranker's
    targets, checked for a pair to order whatever the loss."""
    if ranking:
        return _worker.ranking_stats
    if isinstance(loss, SoftmaxLogLoss):
        return _ClassCounts(loss.n_trees_per_iteration)
    if isinstance(loss, (SquaredError, Poisson, BinaryLogLoss)):
        return _mean_stats
    if isinstance(loss, CustomObjective):  # baseline 0
        return _no_statistics
    raise ValueError(f"loss {getattr(loss, 'name', type(loss).__name__)!r} is not supported "
                     "by distributed training (its baseline or leaf values are quantiles "
                     "of all rows); use squared_error, poisson or log_loss.")


def combine_baseline(loss, stats):
    """The loss's baseline from per-partition statistics (partition order)."""
    if isinstance(loss, (LambdaRankLoss, CustomObjective)):
        if isinstance(stats[0], bool) and not any(stats):
            raise ValueError("No query has documents with different relevance grades: there "
                             "is no pair to rank, so nothing to learn.")
        return loss.baseline(None, None), None
    if isinstance(loss, SoftmaxLogLoss):
        counts = np.zeros(loss.n_trees_per_iteration)
        for c, _ in stats:
            counts += c
        return loss.baseline(np.arange(counts.size, dtype=np.float64), counts), counts
    sums, total = None, 0.0
    for s, w in stats:
        sums = s.copy() if sums is None else sums + s
        total += w
    if total <= 0:
        raise ValueError("sample_weight sums to zero; at least one weight must be positive.")
    means = sums / total
    return loss.baseline(means[:, None], None), means


class DaskFit:
    """One distributed fit of ``local`` (a configured local estimator)."""

    def __init__(self, client, local, parts, row_counts, n_features, max_recoveries):
        self.client = client
        self.local = local
        self.row_counts = row_counts
        self.offsets = np.concatenate([[0], np.cumsum(row_counts)]).astype(np.int64)
        self.n_samples = int(self.offsets[-1])
        self.n_features = n_features
        self.max_recoveries = max_recoveries
        self.n_threads = effective_n_threads(local.n_jobs)
        self.rounds = None
        self.recoveries = []
        # persist the partitions (futures keep them on the workers; Dask
        # recomputes a lost one from its graph)
        self.futures = self._persist(parts)
        self.eval_futures = []  # (set index, partition index in the set, futures)
        self.eval_rounds = None
        self.eval_row_weights = False

    def _persist(self, parts):
        flat = iter(self.client.compute([item for p in parts for item in p
                                         if item is not None]))
        return [tuple(next(flat) if item is not None else None for item in p) for p in parts]

    def hold_out(self, train_rows, validation_rows, held_queries=None):
        """Train on the rows ``train_rows`` (sorted global indices) only and
        make ``validation_rows`` eval set 0, each partition split where it
        lies (the subsets are tasks on the persisted partitions, so Dask
        recomputes a lost one). ``held_queries``: per partition, which of its
        queries are held out, when its query array holds group sizes."""
        by_part = (split_by_partition(train_rows, self.offsets),
                   split_by_partition(validation_rows, self.offsets))
        subsets = ([], [])
        for p, (x, y, w, q) in enumerate(self.futures):
            for held, rows_of in enumerate(by_part):
                rows = rows_of[p]
                if not rows.size:  # a partition without such rows is left out
                    continue
                take = (lambda f, idx=rows: None if f is None else self.client.submit(
                    _worker.take_rows, f, idx, pure=False))
                if q is not None and held_queries is not None:
                    queries = held_queries[p] if held else ~held_queries[p]
                    q_sub = take(q, np.flatnonzero(queries))
                else:
                    q_sub = take(q)
                subsets[held].append((take(x), take(y), take(w), q_sub))
        counts = [int(rows.size) for rows in by_part[0].values() if rows.size]
        self.futures = subsets[0]
        self.row_counts = tuple(counts)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n_samples = int(self.offsets[-1])
        self.eval_futures = [(0, i, f) for i, f in enumerate(subsets[1])]
        self.eval_row_weights = True  # the held-out rows keep their training weights

    def query_sizes(self, kind):
        """Each training partition's query sizes (a ranker's validation split
        draws whole queries)."""
        return self.client.gather([
            self.client.submit(_worker.query_sizes, kind, part[3], pure=False)
            for part in self.futures])

    def class_indices(self, classes):
        """Every training row's class index (a classifier's stratified
        validation split): the one per-row array the client fetches, in the
        smallest integer type."""
        dtype = np.min_scalar_type(max(len(classes) - 1, 0))
        return np.concatenate(self.client.gather([
            self.client.submit(_worker.class_indices, part[1], classes, dtype, pure=False)
            for part in self.futures]))

    def add_eval_sets(self, sets):
        """Persist the eval sets' partitions (``[(parts, row_counts)]``)."""
        for s, (parts, _) in enumerate(sets):
            self.eval_futures += [(s, i, f) for i, f in enumerate(self._persist(parts))]

    # ---------------------------------------------------------------- setup
    def _check_futures(self, wait=0.0):
        """Raise :class:`DataLost` if a partition can no longer be computed;
        ``wait``: seconds to let the client learn of a cancellation."""
        import time
        # a partition lost with its worker is "lost" while the scheduler
        # recomputes it from its graph; one that cannot be recomputed (its
        # scattered input is gone) is cancelled
        deadline = time.monotonic() + wait
        while True:
            parts = self.futures + [f for _, _, f in self.eval_futures]
            lost = [i for i, part in enumerate(parts)
                    if any(f is not None and f.status == "cancelled" for f in part)]
            if lost or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if lost:
            raise DataLost(f"training partitions {lost} were lost with their worker and "
                           "cannot be recomputed (scattered in-memory data); build the "
                           "collections from a graph (e.g. da.from_array, read_parquet) "
                           "to survive a lost worker.")

    def bin_mapper(self, seed, is_categorical=None):
        """The thresholds (and kept categories) a local fit learns: its row
        sample, fetched."""
        est = self.local
        if self.n_samples > BIN_SUBSAMPLE:
            rng = np.random.RandomState(seed)
            rows = np.sort(rng.choice(self.n_samples, BIN_SUBSAMPLE, replace=False))
            by_part = split_by_partition(rows, self.offsets)
        else:
            by_part = {p: np.arange(n) for p, n in enumerate(self.row_counts)}
        pieces = [self.client.submit(_worker.sample_rows, self.futures[p][0], rows, pure=False)
                  for p, rows in by_part.items() if rows.size]
        sample = np.concatenate(self.client.gather(pieces), axis=0).astype(X_DTYPE)
        mapper = BinMapper(est.max_bins, random_state=seed, n_threads=self.n_threads)
        mapper.is_categorical = is_categorical
        return mapper.fit(sample)

    def setup(self, mapper, encode_y, check_y, loss, row_weights=None, ranking=False):
        """Bin and register every partition; return the baseline statistics.
        ``row_weights(y_enc, sw)``: the training weights of a partition's rows
        (``class_weight``), else the sample weights."""
        self._check_futures()
        fit_id = new_fit_id()
        stats_fn = baseline_statistics(loss, ranking)
        flat = mapper.to_arrays()
        arrays = (flat["bin_thresholds"], flat["bin_offsets"], flat["is_categorical"])
        futures = [self.client.submit(
            _worker.init_partition, fit_id, i, x, y, w, q, arrays, mapper.max_bins, encode_y,
            check_y, stats_fn, self.n_threads, row_weights, pure=False)
            for i, (x, y, w, q) in enumerate(self.futures)]
        self.rounds = Rounds(self.client, fit_id, {})
        results = self._registered(futures)
        self.rounds = Rounds(self.client, fit_id, _placement(results))
        return [stats for _, _, stats in results]

    def setup_eval(self, mapper, encoders, check_y, row_weights=None):
        """Bin and register the eval sets' partitions (after :meth:`setup`):
        the targets of set ``s`` encoded by ``encoders[s]``; held-out
        training rows (:meth:`hold_out`) weighted by ``row_weights`` as in
        training (``class_weight``)."""
        row_weights = row_weights if self.eval_row_weights else None
        if not self.eval_futures:
            return
        fit_id = self.rounds.fit_id + "-eval"
        flat = mapper.to_arrays()
        arrays = (flat["bin_thresholds"], flat["bin_offsets"], flat["is_categorical"])
        futures = [self.client.submit(
            _worker.init_partition, fit_id, g, x, y, w, q, arrays, mapper.max_bins,
            encoders[s], check_y, _no_statistics, self.n_threads, row_weights,
            f"eval_set[{s}] partition {i}", pure=False)
            for g, (s, i, (x, y, w, q)) in enumerate(self.eval_futures)]
        self.eval_rounds = Rounds(self.client, fit_id, {})
        self.eval_rounds = Rounds(self.client, fit_id, _placement(self._registered(futures)))

    def eval_partitions(self, s):
        """Indices (in :meth:`eval_partials`' results) of eval set ``s``."""
        return [g for g, (set_index, _, _) in enumerate(self.eval_futures) if set_index == s]

    def _registered(self, futures):
        """The results of registering partitions; on a failure, nothing of
        the fit stays on the workers."""
        try:
            return self.client.gather(futures)
        except Exception as exc:
            # gather stops at the first failed partition while the others may
            # still be running: let them finish, so none registers its state on
            # a worker after the drop below (a failed fit leaves nothing behind)
            from distributed import wait
            try:
                wait(futures, timeout=30)
            except Exception:  # timeout or lost workers: they hold nothing we can drop
                pass
            self.drop()
            if isinstance(exc, ValueError):
                raise
            self._check_futures()
            from distributed.client import FutureCancelledError
            if isinstance(exc, FutureCancelledError):
                # a partition's input was cancelled before its future's
                # status said so: the same lost, scattered data
                self._check_futures(wait=2.0)
            raise

    def register(self, baseline, mapper, train_scorer=None, eval_scorer=None):
        """Complete the registered states with the baseline (and the scorers
        of early stopping and the eval sets)."""
        params = {"n_bins_non_missing": mapper.n_bins_non_missing_,
                  "missing_bin": mapper.missing_values_bin_idx_}
        self.rounds.run(_worker.set_baseline, baseline, params, self.n_threads, train_scorer)
        if self.eval_rounds is not None:
            self.eval_rounds.run(_worker.set_eval_baseline, baseline, self.n_threads,
                                 eval_scorer)

    def all_rounds(self):
        return [r for r in (self.rounds, self.eval_rounds) if r is not None]

    def drop(self):
        for rounds in self.all_rounds():
            rounds.close()
            try:
                self.client.run(_worker.drop_fit, rounds.fit_id)
            except Exception:  # a worker that is gone holds nothing
                pass
        self.eval_rounds = None


def _placement(results):
    """``{worker address: [partition indices]}`` of registration results."""
    placement = {}
    for i, (addr, _, _) in enumerate(results):
        placement.setdefault(addr, []).append(i)
    return placement


def run_fit(fit, est, loss, encode_y, check_y, sample_weight_given, row_weights=None,
            ranking=False, evaluation=None):
    """Fit ``est`` (the local estimator) on the workers; returns it fitted.
    ``row_weights``: see :meth:`DaskFit.setup`; ``ranking``: a ranker's fit;
    ``evaluation``: an :class:`~dartboost.dask._evaluation.Evaluation` (eval
    sets, early stopping)."""
    objects, before, after = check_callbacks(est.callbacks)
    if before or after:
        raise ValueError("dartboost.dask supports callback objects (e.g. CheckpointCallback), "
                         "not LightGBM-style callables.")
    checkpoint = next((cb for cb in objects if hasattr(cb, "store") and hasattr(cb, "name")),
                      None)
    seed = est._seed
    mapper = fit.bin_mapper(seed, getattr(est, "is_categorical_", None))
    K = loss.n_trees_per_iteration
    est.n_trees_per_iteration_ = K
    for cb in objects:
        if hasattr(cb, "on_fit_begin"):
            cb.on_fit_begin(est)
    start_state = None
    est.evals_result_ = ({} if evaluation is None else
                         {name: {} for name in evaluation.set_names()})
    scorers = (None, None) if evaluation is None else evaluation.scorers(est, loss)
    while True:
        try:
            stats = fit.setup(mapper, encode_y, check_y, loss, row_weights, ranking)
            if evaluation is not None:
                fit.setup_eval(mapper, evaluation.encoders, check_y, row_weights)
            baseline, _ = combine_baseline(loss, stats)
            if getattr(est, "base_score", None) is not None:
                baseline = est._baseline(loss, None, None)  # base_score, checked
            if start_state is None:
                est.booster_ = Booster(mapper, baseline)
            else:
                history = est.evals_result_
                est._set_state(*start_state)
                est.n_trees_per_iteration_ = K
                # the metrics recorded before the loss are the resumed model's
                # (one entry per iteration), the rest is recomputed
                est.evals_result_ = {name: {m: curve[:est.n_iter_] for m, curve in
                                            metrics.items()}
                                     for name, metrics in history.items()}
            fit.register(est.booster_.baseline, est.booster_.bin_mapper, *scorers)
            booster = est.booster_
            if booster.n_trees:
                for rounds in fit.all_rounds():
                    rounds.run(_worker.add_trees, booster.trees, booster.weights, K,
                               est.boosting == "dart", booster.binned_tables())
            _iterations(fit, est, loss, objects, sample_weight_given, evaluation)
            break
        except WorkerLost as exc:
            fit.drop()
            if len(fit.recoveries) >= fit.max_recoveries:
                raise RuntimeError(f"dartboost.dask: gave up after {len(fit.recoveries)} "
                                   f"recoveries from lost workers; last: {exc}") from exc
            start_state = _resume_state(checkpoint)
            n_from = 0 if start_state is None else start_state[0]["n_iter"]
            fit.recoveries.append({"error": str(exc), "resumed_at_iteration": n_from})
            fit._check_futures()
        finally:
            fit.drop()
    for cb in objects:
        if hasattr(cb, "on_fit_end"):
            cb.on_fit_end(est)
    est.booster_.compact()
    return est


def _resume_state(checkpoint):
    """``(header, arrays)`` of the newest intact checkpoint, or None.

    Read through the callback's store object (``versions``/``get_state``)
    rather than by importing ``dartboost.store``: the core never imports the
    store. A version that does not read back is skipped with a warning, as
    ``resume_fit`` does.
    """
    if checkpoint is None:
        return None
    import warnings
    store, name = checkpoint.store, checkpoint.name
    try:
        versions = store.versions(name)
    except KeyError:  # the store's ObjectNotFoundError: no checkpoint yet
        return None
    for version in reversed(versions):
        try:
            header, arrays = store.get_state(name, version)
        except Exception as exc:
            # a damaged version raises the store's or the format's errors;
            # anything else is a bug and propagates
            if not (type(exc).__module__.startswith("dartboost.store")
                    or isinstance(exc, FormatError)):
                raise
            warnings.warn(f"checkpoint {name!r} v{version} is damaged and was skipped: {exc}",
                          RuntimeWarning, stacklevel=2)
            continue
        return header["state"], arrays
    return None


def _iterations(fit, est, loss, objects, sample_weight_given, evaluation):
    booster = est.booster_
    mapper = booster.bin_mapper
    K = loss.n_trees_per_iteration
    dart = est.boosting == "dart"
    policy = est._dart_policy() if dart else None
    hessians_constant = loss.unit_hessians and not sample_weight_given
    stopping = evaluation is not None and evaluation.patience is not None
    if stopping and not est.validation_score_:
        # the baseline's scores (the local fit's first entries)
        evaluation.read(fit, fit.rounds.by_partition(_worker.partials),
                        _eval_round(fit, _worker.partials))
        train_score, validation_score = evaluation.stopping_scores()
        est.train_score_.append(train_score)
        est.validation_score_.append(validation_score)
    est.n_iter_ = booster.num_iterations()
    best_iter, best_score = est._best_so_far() if stopping else (None, None)
    begin = booster.num_iterations()
    kept = None
    for t in range(begin, est.n_estimators):
        rng = np.random.default_rng([est._seed, t])
        weights = booster.weights
        if dart:
            dropped = policy.select_dropped(weights, rng)
            new_weight, scale = policy.normalize(dropped.size)
        else:
            dropped, new_weight, scale = np.empty(0, dtype=np.int64), est.learning_rate, 1.0
        fit.rounds.run(_worker.begin_iteration, loss, weights, dropped, new_weight, scale)
        rows_by_part = None
        if est.subsample < 1.0:
            n_sub = max(1, int(round(est.subsample * fit.n_samples)))
            rows = np.sort(rng.choice(fit.n_samples, n_sub, replace=False))
            rows_by_part = split_by_partition(rows, fit.offsets)
        feature_mask = None
        if est.colsample_bytree < 1.0:
            n_feat = max(1, int(round(est.colsample_bytree * fit.n_features)))
            feature_mask = np.zeros(fit.n_features, dtype=np.uint8)
            feature_mask[rng.choice(fit.n_features, n_feat, replace=False)] = 1
        trees, bitsets = [], []
        for k in range(K):
            roots = fit.rounds.by_partition(
                _worker.begin_tree, k, feature_mask, hessians_constant,
                per_worker=lambda idx: (None if rows_by_part is None
                                        else {i: rows_by_part[i] for i in idx},))
            grower = DistributedTreeGrower(
                fit.rounds, roots, fit.n_features, mapper.n_bins_non_missing_,
                mapper.missing_values_bin_idx_, feature_mask=feature_mask,
                max_leaf_nodes=est.max_leaf_nodes, max_depth=est.max_depth,
                min_samples_leaf=est.min_samples_leaf, min_child_weight=est.min_child_weight,
                min_split_gain=est.min_split_gain, l2_regularization=est.l2_regularization,
                colsample_bynode=est.colsample_bynode, rng=rng, n_threads=fit.n_threads,
                bin_thresholds=mapper.bin_thresholds_, hessians_are_constant=hessians_constant,
                is_categorical=mapper.is_categorical_, **est._categorical_split_options(),
                reg_alpha=est.reg_alpha, monotonic_cst=est._fit_constraints[0],
                interaction_cst=est._fit_constraints[1])
            nodes, _ = grower.grow()
            trees.append(nodes)
            bitsets.append(grower.cat_bitsets)
        tables = [{} if not mapper.has_categorical else
                  {"is_categorical": mapper.is_categorical_,
                   "cat_bitsets": np.ascontiguousarray(b.reshape(-1))} for b in bitsets]
        train_partials = fit.rounds.by_partition(_worker.end_iteration, trees, tables, t * K,
                                                 new_weight, dart)
        eval_partials = _eval_round(fit, _worker.update_eval, weights, dropped, new_weight,
                                    scale, trees, tables, t * K, dart)
        booster.append_iteration(trees, dropped, scale, new_weight, bitsets)
        est.n_iter_ = t + 1
        est.best_iteration_ = est.n_iter_
        results = []
        if evaluation is not None:
            evaluation.read(fit, train_partials, eval_partials)
            results = evaluation.record(est)
        logs = {f"{set_name}_{name}": value for set_name, name, value, _ in results}
        if stopping:
            train_score, validation_score = evaluation.stopping_scores()
            est.train_score_.append(train_score)
            est.validation_score_.append(validation_score)
            logs = {"train_score": train_score, "validation_score": validation_score, **logs}
            if validation_score > best_score + evaluation.tol:
                best_iter, best_score = t + 1, validation_score
        stop = False
        for cb in objects:
            if hasattr(cb, "on_iteration_end") and cb.on_iteration_end(est, t, logs):
                stop = True
        if stopping and t + 1 - best_iter >= evaluation.patience:
            stop = True
        if stop:
            break
    if stopping:
        kept = best_iter
    if kept is not None and kept < est.n_iter_:
        booster.truncate(kept)
        est.n_iter_ = kept
    est.best_iteration_ = kept if kept is not None else est.n_iter_
    # LightGBM's best_score_: every recorded metric at the kept model
    at = est.best_iteration_ - 1
    est.best_score_ = {name: {m: curve[at] for m, curve in metrics_.items()
                              if 0 <= at < len(curve)}
                       for name, metrics_ in est.evals_result_.items()}


def _eval_round(fit, fn, *args):
    """``fn`` on the eval partitions (their results in order), if any."""
    if fit.eval_rounds is None:
        return []
    return fit.eval_rounds.by_partition(fn, *args)
