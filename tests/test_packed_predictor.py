"""The packed raw-data predictor (``_cext/_packed_predictor.pyx``) against a
node-by-node reference traversal, on fitted models with NaN, infinities,
categorical splits, DART weights and several outputs."""
import pickle

import numpy as np
import pytest

from dartboost import DartClassifier, DartRegressor
from dartboost._cext import _packed_predictor
from dartboost._common import NODE_DTYPE


def _reference_leaves(booster, X):
    """Leaf node (index within its tree) of every row in every tree: the
    traversal the node records describe, one level at a time in numpy."""
    mapper = booster.bin_mapper
    is_cat = (mapper.is_categorical_ if getattr(mapper, "has_categorical", False)
              else np.zeros(booster.n_features, dtype=bool))
    bitsets = booster.cat_bitsets
    rows = np.arange(X.shape[0])
    out = np.empty((X.shape[0], booster.n_trees), dtype=np.int64)
    for t in range(booster.n_trees):
        nodes = booster.tree(t)
        node = np.zeros(X.shape[0], dtype=np.int64)
        while True:
            inner = nodes["is_leaf"][node] == 0
            if not inner.any():
                break
            feature = nodes["feature_idx"][node]
            x = X[rows, feature]
            left = np.where(np.isnan(x), nodes["missing_go_to_left"][node] == 1,
                            x <= nodes["num_threshold"][node])
            for i in np.flatnonzero(inner & is_cat[feature] & ~np.isnan(x)):
                f = feature[i]
                cats = mapper._flat[mapper._offsets[f]:mapper._offsets[f + 1]]
                pos = np.searchsorted(cats, x[i])
                words = bitsets[int(nodes["num_threshold"][node[i]])]
                left[i] = bool(pos < cats.size and cats[pos] == x[i]
                               and (words[pos >> 5] >> (pos & 31)) & 1)
            child = np.where(left, nodes["left"][node], nodes["right"][node])
            node = np.where(inner, child, node)
        out[:, t] = node
    return out


def _reference_raw(booster, X, iteration_range=None):
    """Raw scores adding ``weight * leaf value`` tree by tree, in tree order
    (the summation order of the node-by-node predictor)."""
    K = booster.n_trees_per_iteration
    start, stop = iteration_range or (0, booster.num_iterations())
    weights = (booster.weights if stop == booster.num_iterations()
               else booster.weights_at(stop))
    leaves = _reference_leaves(booster, X)
    out = np.tile(booster.baseline, (X.shape[0], 1))
    for t in range(start * K, stop * K):
        out[:, t % K] += weights[t // K] * booster.tree(t)["value"][leaves[:, t]]
    return out


def _data(seed=0, n=2500, n_features=8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    X[rng.random(X.shape) < 0.08] = np.nan
    X[:, 0] = rng.integers(0, 25, size=n)            # categorical, many levels
    X[:, 1] = rng.integers(0, 4, size=n)             # categorical, few levels
    X[rng.random(n) < 0.05, 0] = np.nan
    y = np.nan_to_num(X[:, 2]) + (X[:, 0] % 3 == 0) + (X[:, 1] == 2) + rng.normal(size=n) * .3
    return X, y


def _test_rows(seed=1, n=1100, n_features=8):
    X, _ = _data(seed, n, n_features)
    X[:20, 0] = [-1, 99, 3.5, np.inf, -np.inf] * 4   # unseen / non-integer categories
    X[20:30, 2:] = np.inf
    X[30:40, 2:] = -np.inf
    X[40:45] = np.nan                                   # rows all missing
    return X


MODELS = {
    "mart_numeric": lambda X, y: DartRegressor(boosting="mart", n_estimators=25,
                                               random_state=0).fit(X[:, 2:], y),
    "dart_categorical": lambda X, y: DartClassifier(
        boosting="dart", n_estimators=30, categorical_features=[0, 1],
        random_state=0).fit(X, y > 1),
    "dart_multiclass_categorical": lambda X, y: DartClassifier(
        boosting="dart", n_estimators=12, max_leaf_nodes=63, categorical_features=[0, 1],
        random_state=0).fit(X, np.digitize(y, [0.5, 1.2, 2.0])),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    X, y = _data()
    est = MODELS[request.param](X, y)
    X_test = _test_rows()
    if est.n_features_in_ != X_test.shape[1]:
        X_test = X_test[:, 2:]
    return est, X_test


def test_raw_scores_bit_identical_to_node_by_node(model):
    est, X = model
    booster = est.booster_
    np.testing.assert_array_equal(booster.predict_raw(X, n_threads=2),
                                  _reference_raw(booster, X))
    n = booster.num_iterations()
    for rng in [(0, 1), (3, n - 2), (n - 1, n), (0, n)]:
        np.testing.assert_array_equal(booster.predict_raw(X, rng, n_threads=2),
                                      _reference_raw(booster, X, rng))


def test_leaves_match_node_by_node(model):
    est, X = model
    booster = est.booster_
    np.testing.assert_array_equal(booster.predict_leaf(X, n_threads=2),
                                  _reference_leaves(booster, X))
    K = booster.n_trees_per_iteration
    np.testing.assert_array_equal(booster.predict_leaf(X, 2, (2, 5)),
                                  _reference_leaves(booster, X)[:, 2 * K:5 * K])


def test_result_does_not_depend_on_threads_or_blocking(model):
    est, X = model
    booster = est.booster_
    big = np.concatenate([X] * 6)  # enough work for 4 threads (above the threshold)
    packed, values, node_ids, roots, depths = booster._packed()
    trees = np.arange(booster.n_trees, dtype=np.int64)
    factors = np.repeat(booster.weights, booster.n_trees_per_iteration)
    results = []
    for n_threads in (1, 2, 3, 4):
        out = np.zeros((big.shape[0], booster.n_trees_per_iteration))
        _packed_predictor.predict_raw(packed, values, roots, depths, trees, factors,
                                      booster.n_trees_per_iteration, big, n_threads, out,
                                      **booster._raw_tables())
        results.append(out)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
    # any number of rows: partial blocks, a single row, no rows
    full = booster.predict_raw(big)
    for n in (0, 1, 127, 129, 300):
        np.testing.assert_array_equal(booster.predict_raw(big[:n], n_threads=2), full[:n])


def test_staged_and_estimator_outputs(model):
    est, X = model
    booster = est.booster_
    stages = list(booster.staged_predict_raw(X, n_threads=2))
    assert len(stages) == booster.num_iterations()
    for i in (0, len(stages) // 2, len(stages) - 1):
        np.testing.assert_allclose(stages[i], _reference_raw(booster, X, (0, i + 1)),
                                   rtol=1e-12, atol=1e-12)
    # F-ordered and float32 input: the same answer as the C-ordered float64 one
    np.testing.assert_array_equal(booster.predict_raw(np.asfortranarray(X)),
                                  booster.predict_raw(X))
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(booster.predict_raw(X32),
                                  _reference_raw(booster, X32.astype(np.float64)))


def test_layout_cache_follows_the_trees():
    X, y = _data()
    est = DartRegressor(boosting="mart", n_estimators=5, warm_start=True,
                        random_state=0).fit(X[:, 2:], y)
    booster = est.booster_
    booster.predict_raw(X[:, 2:])
    assert booster._packed_cache is not None
    # pickled without the layout (derived data), rebuilt on use
    again = pickle.loads(pickle.dumps(booster))
    assert again._packed_cache is None
    np.testing.assert_array_equal(again.predict_raw(X[:, 2:]), booster.predict_raw(X[:, 2:]))
    # warm start appends trees: predictions use them
    est.set_params(n_estimators=9).fit(X[:, 2:], y)
    np.testing.assert_array_equal(est.booster_.predict_raw(X[:, 2:]),
                                  _reference_raw(est.booster_, X[:, 2:]))
    est.booster_.truncate(3)
    np.testing.assert_array_equal(est.booster_.predict_raw(X[:, 2:]),
                                  _reference_raw(est.booster_, X[:, 2:]))
    # never part of a model state
    header, arrays = est.booster_.to_state()
    assert not any("packed" in name for name in arrays)


def _stump(feature=0):
    nodes = np.zeros(3, dtype=NODE_DTYPE)
    nodes[0] = (0.0, 10, feature, 0.5, 1, 1, 2, 1.0, 0, 0, 0, 1.0)
    nodes[1]["is_leaf"] = nodes[2]["is_leaf"] = 1
    nodes[1]["value"], nodes[2]["value"] = -1.0, 2.0
    return nodes


def test_pack_trees_layout_and_errors():
    nodes = _stump()
    packed, values, ids, roots, depths = _packed_predictor.pack_trees(
        nodes, np.array([0, 3], np.int64), 2)
    assert packed.dtype.itemsize == 16
    assert list(depths) in ([0], [1]) and list(roots) == [0] and list(ids) == [0, 1, 2]
    assert packed["left"][1] == 1 and packed["left"][2] == 2  # leaves are fixed points
    assert list(values) == [0.0, -1.0, 2.0]
    X = np.array([[0.0, 0], [1.0, 0], [np.nan, 0]])
    out = np.zeros((3, 1))
    _packed_predictor.predict_raw(packed, values, roots, depths, np.array([0, 0], np.int64),
                                  np.array([1.0, 0.5]), 1, X, 1, out)
    np.testing.assert_array_equal(out[:, 0], [-1.5, 3.0, -1.5])  # NaN goes left

    offsets = np.array([0, 3], np.int64)
    with pytest.raises(ValueError, match="feature index"):
        _packed_predictor.pack_trees(_stump(feature=5), offsets, 2)
    # a shared subtree (children after parents, as a model file is checked
    # for, but not a tree) would be unrolled past the tree's size
    dag = np.zeros(5, dtype=NODE_DTYPE)
    dag["is_leaf"] = [0, 0, 0, 1, 1]
    dag["left"], dag["right"] = [1, 3, 3, 0, 0], [2, 4, 4, 0, 0]
    with pytest.raises(ValueError, match="do not form a tree"):
        _packed_predictor.pack_trees(dag, np.array([0, 5], np.int64), 2)
    unreached = np.zeros(4, dtype=NODE_DTYPE)
    unreached[:3] = _stump()
    unreached[3]["is_leaf"] = 1
    with pytest.raises(ValueError, match="does not reach"):
        _packed_predictor.pack_trees(unreached, np.array([0, 4], np.int64), 2)
    with pytest.raises(ValueError, match="bitset"):
        _packed_predictor.pack_trees(_stump(), offsets, 2, np.array([1, 0], np.uint8), 0)
    with pytest.raises(ValueError, match="tree_offsets"):
        _packed_predictor.pack_trees(_stump(), np.array([0, 2], np.int64), 2)
    with pytest.raises(ValueError, match="not in the model"):
        _packed_predictor.predict_raw(packed, values, roots, depths, np.array([1], np.int64),
                                      np.array([1.0]), 1, X, 1, out)
    with pytest.raises(ValueError, match="shape"):
        _packed_predictor.predict_raw(packed, values, roots, depths, np.array([0], np.int64),
                                      np.array([1.0]), 2, X, 1, out)


def test_float32_and_column_ordered_input_without_a_whole_copy(monkeypatch):
    """fit and predict read float32 and column-ordered arrays (a DataFrame's
    layout) block by block: the same model and scores as C-ordered float64."""
    from dartboost import _binning, _booster
    X, y = _data(n_features=6)
    X, y = X[:, 2:], y > 1
    ref = DartClassifier(n_estimators=8, random_state=0).fit(X, y)
    proba = ref.predict_proba(X)
    blocks = []
    real = _booster.dense_blocks

    def spy(A):
        for start, stop, block in real(A):
            blocks.append(stop - start)
            yield start, stop, block

    monkeypatch.setattr(_binning, "DENSE_BLOCK_BYTES", 8 * X.shape[1] * 300)
    monkeypatch.setattr(_booster, "dense_blocks", spy)
    for layout in (np.asfortranarray(X), X.astype(np.float32)):
        blocks.clear()
        est = DartClassifier(n_estimators=8, random_state=0).fit(
            layout, y, eval_set=[(layout, y)])
        exact = layout.astype(np.float64)
        np.testing.assert_array_equal(
            est.booster_.nodes,
            DartClassifier(n_estimators=8, random_state=0).fit(exact, y).booster_.nodes)
        expected = est.predict_proba(np.ascontiguousarray(exact))
        blocks.clear()
        np.testing.assert_array_equal(est.predict_proba(layout), expected)
        assert len(blocks) == -(-X.shape[0] // 300)  # 300-row blocks, not one copy
    np.testing.assert_array_equal(ref.predict_proba(np.asfortranarray(X)), proba)


def test_category_lookup_and_binary_search_agree():
    """Integer categories are binned through a direct table, others by binary
    search among the kept ones: both give the reference traversal."""
    X, y = _data()
    X[:, 1] = X[:, 1] * 0.5 + 0.25  # non-integer categories: no table
    est = DartClassifier(n_estimators=15, categorical_features=[0, 1],
                         random_state=0).fit(X, y > 1)
    booster = est.booster_
    X_test = _test_rows()
    X_test[:, 1] = X_test[:, 1] * 0.5 + 0.25
    X_test[:10, 1] = [0.25, 0.75, 1.0, 9.25, -0.25, np.inf, 0.3, 1.25, 2.5, np.nan]
    tables = booster._raw_tables()
    assert tables["cat_lookup_size"][0] > 0 and tables["cat_lookup_size"][1] == -1
    assert list(tables["cat_lookup_size"][2:]) == [-1] * (X.shape[1] - 2)
    expected = _reference_raw(booster, X_test)
    np.testing.assert_array_equal(booster.predict_raw(X_test, n_threads=2), expected)
    packed, values, _, roots, depths = booster._packed()
    trees = np.arange(booster.n_trees, dtype=np.int64)
    out = np.tile(booster.baseline, (X_test.shape[0], 1))
    no_lookup = {k: v for k, v in tables.items() if not k.startswith("cat_lookup")}
    _packed_predictor.predict_raw(packed, values, roots, depths, trees,
                                  np.repeat(booster.weights, 1), 1, X_test, 1, out, **no_lookup)
    np.testing.assert_array_equal(out, expected)
    # the categorical tables are required by trees with categorical splits
    with pytest.raises(ValueError, match="categorical tables"):
        _packed_predictor.predict_raw(packed, values, roots, depths, trees,
                                      np.repeat(booster.weights, 1), 1, X_test, 1, out)
    bad = dict(tables, cat_lookup_start=tables["cat_lookup_start"] + 10 ** 6)
    with pytest.raises(ValueError, match="out of range"):
        _packed_predictor.predict_raw(packed, values, roots, depths, trees,
                                      np.repeat(booster.weights, 1), 1, X_test, 1, out, **bad)


def test_unbalanced_trees_walk_few_lockstep_levels():
    """Late boosting trees send most rows to shallow leaves: the lockstep
    levels follow the training rows, not the deepest leaf, and the rows
    still inside the tree finish alone (same leaves)."""
    X, y = _data(n=4000)
    est = DartRegressor(boosting="mart", n_estimators=60, learning_rate=0.5,
                        random_state=0).fit(X[:, 2:], y)
    booster = est.booster_
    levels = booster._packed()[4]
    deepest = [int(booster.tree(t)["depth"].max()) for t in range(booster.n_trees)]
    assert np.all(levels <= deepest) and np.any(levels < deepest)
    X_test = _test_rows()[:, 2:]
    np.testing.assert_array_equal(booster.predict_leaf(X_test), _reference_leaves(booster, X_test))
    np.testing.assert_array_equal(booster.predict_raw(X_test), _reference_raw(booster, X_test))


def test_a_model_file_whose_nodes_are_not_a_tree_is_rejected_at_load():
    from dartboost import FormatError
    from dartboost.model_io import get_state, set_state
    X, y = _data()
    est = DartRegressor(n_estimators=3, random_state=0).fit(X[:, 2:], y)
    header, arrays = get_state(est)
    nodes = arrays["nodes"].copy()
    nodes["right"][0] = nodes["left"][0]  # both children in range, one subtree twice
    with pytest.raises(FormatError, match="nodes"):
        set_state(DartRegressor(), header, dict(arrays, nodes=nodes))
    again = set_state(DartRegressor(), header, arrays)
    np.testing.assert_array_equal(again.predict(X[:, 2:]), est.predict(X[:, 2:]))


def test_infinity_is_reported_by_the_kernel_and_refused_by_the_estimators():
    """The estimators' +-inf check runs in the prediction kernel's own pass
    (no separate scan of X): every input layout is refused with scikit-
    learn's message, while the Booster predicts infinity like any value."""
    import scipy.sparse as sp
    X, y = _data()
    clf = DartClassifier(boosting="mart", n_estimators=15, random_state=0).fit(X, y > 1)
    reference = clf.booster_.predict_raw(X)
    for sign in (1, -1):
        bad = X.copy()
        bad[1234, 3] = sign * np.inf  # one value, in a block of its own rows
        layouts = {"float64": bad, "float32": bad.astype(np.float32),
                   "column-ordered": np.asfortranarray(bad), "csr": sp.csr_matrix(bad)}
        for name, Xb in layouts.items():
            dtype = "float32" if name == "float32" else "float64"
            for method in (clf.predict, clf.predict_proba, clf.decision_function):
                with pytest.raises(ValueError, match=f"contains infinity.*{dtype}"):
                    method(Xb)
        raw = clf.booster_.predict_raw(bad)  # the Booster: inf is a value
        assert np.array_equal(np.delete(raw, 1234, 0), np.delete(reference, 1234, 0))
        with pytest.raises(ValueError, match="contains infinity"):
            clf.booster_.predict_raw(bad, reject_infinity=True)
    nan = X.copy()
    nan[7, 2] = np.nan  # missing values stay accepted
    assert clf.predict_proba(nan).shape == (X.shape[0], 2)


def test_binary_probabilities_are_expit_of_the_margins_in_rows():
    from scipy.special import expit
    X, y = _data()
    clf = DartClassifier(boosting="mart", n_estimators=15, random_state=0, n_jobs=2).fit(X, y > 1)
    proba = clf.predict_proba(X)
    margin = clf.decision_function(X)
    assert proba.shape == (X.shape[0], 2) and proba.flags.c_contiguous
    assert np.array_equal(proba[:, 1], expit(margin))
    assert np.array_equal(proba[:, 0], 1 - expit(margin))
