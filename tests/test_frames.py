"""pyarrow Tables and polars DataFrames in fit and predict (``dartboost/_frames.py``):
the same model as the equivalent pandas frame, names from the frame."""
import numpy as np
import pandas as pd
import pytest

from dartboost import DartClassifier, DartRegressor
from dartboost._categorical import _encode

pa = pytest.importorskip("pyarrow")


def _same_model(a, b):
    ha, aa = a._get_state()
    hb, ab = b._get_state()
    assert ha == hb
    for name in aa:
        np.testing.assert_array_equal(aa[name], ab[name], err_msg=name)


def _data(n=1200, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue", "teal", "ochre"], size=n).astype(object)
    colour[rng.random(n) < 0.05] = None
    city = rng.choice([f"c{i:02d}" for i in range(40)], size=n)
    x = rng.normal(size=n)
    k = rng.integers(0, 5, size=n).astype(float)
    k[rng.random(n) < 0.1] = np.nan
    flag = rng.random(n) < 0.3
    effect = {"red": 1.0, "green": -1.0, "blue": 0.5, "teal": 0.0, "ochre": 2.0, None: 0.3}
    y = (np.array([effect[c] for c in colour]) + np.array([int(c[1:]) % 3 for c in city])
         + x + 0.5 * flag + rng.normal(scale=0.1, size=n))
    return {"colour": colour, "city": city, "x": x, "k": k, "flag": flag}, y


def _arrow_table(cols, chunks=1):
    """``cols`` as a Table: ``city`` dictionary-encoded (in ``chunks``
    chunks, each with its own dictionary), ``colour`` plain strings, ``k``
    integers with nulls."""
    n = len(cols["x"])
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    city = pa.chunked_array([pa.array(cols["city"][a:b]).dictionary_encode()
                             for a, b in zip(bounds[:-1], bounds[1:])])
    k = pa.array([None if np.isnan(v) else int(v) for v in cols["k"]], type=pa.int32())
    return pa.table({"colour": pa.array(list(cols["colour"]), type=pa.string()), "city": city,
                     "x": cols["x"], "k": k, "flag": cols["flag"]})


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("boosting", ["dart", "mart"])
def test_arrow_table_fits_the_model_of_its_pandas_frame(chunks, boosting):
    cols, y = _data()
    table = _arrow_table(cols, chunks)
    kw = dict(boosting=boosting, n_estimators=10, random_state=0, min_data_per_group=5)
    a = DartRegressor(**kw).fit(table, y)
    b = DartRegressor(**kw).fit(table.to_pandas(), y)
    _same_model(a, b)
    assert list(a.feature_names_in_) == ["colour", "city", "x", "k", "flag"]
    np.testing.assert_array_equal(a.is_categorical_, [True, True, False, False, False])
    np.testing.assert_array_equal(a.predict(table), b.predict(table.to_pandas()))
    # predict on a table whose dictionary differs (other order, an unseen label)
    head = table.slice(0, 200)
    city = pa.array(list(reversed(cols["city"][:199])) + ["zz"]).dictionary_encode()
    other = head.set_column(1, "city", city)
    np.testing.assert_array_equal(a.predict(other), b.predict(other.to_pandas()))


def test_arrow_categorical_features_by_name_and_record_batch():
    cols, y = _data(n=600)
    table = _arrow_table(cols)
    kw = dict(n_estimators=5, random_state=0, categorical_features=["colour", "city", "k"],
              min_data_per_group=5)
    a = DartRegressor(**kw).fit(table, y)
    b = DartRegressor(**kw).fit(table.to_pandas(), y)
    _same_model(a, b)
    np.testing.assert_array_equal(a.is_categorical_, [True, True, False, True, False])
    batch = table.to_batches()[0]
    np.testing.assert_array_equal(a.predict(batch), a.predict(table))


def test_arrow_dictionary_with_nulls_and_repeated_values():
    # Arrow allows a dictionary holding null and the same label twice
    dictionary = pa.array(["a", None, "b", "a"])
    col = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3, None, 2], type=pa.int8()),
                                         dictionary)
    from dartboost._frames import as_frame
    frame = as_frame(pa.table({"c": col}))
    assert list(frame["c"].cat.categories) == ["a", "b"]
    np.testing.assert_array_equal(frame["c"].cat.codes, [0, -1, 1, 0, -1, 1])


def test_unsupported_arrow_column_is_named():
    table = pa.table({"x": [1.0, 2.0], "when": pa.array([1, 2], type=pa.timestamp("s"))})
    with pytest.raises(TypeError, match="'when'.*timestamp"):
        DartRegressor(n_estimators=2).fit(table, [1.0, 2.0])


def test_polars_frame_fits_the_model_of_its_pandas_frame():
    pl = pytest.importorskip("polars")
    cols, y = _data(n=900, seed=1)
    frame = pl.DataFrame({
        "colour": pl.Series(list(cols["colour"]), dtype=pl.String),
        "city": pl.Series(list(cols["city"]), dtype=pl.Categorical),
        "x": cols["x"],
        "k": pl.Series([None if np.isnan(v) else int(v) for v in cols["k"]], dtype=pl.Int64),
        "flag": cols["flag"],
        "size": pl.Series(np.where(cols["x"] > 0, "big", "small"),
                          dtype=pl.Enum(["small", "big"])),
    })
    yb = (y > np.median(y)).astype(int)
    kw = dict(n_estimators=8, random_state=0, min_data_per_group=5)
    a = DartClassifier(**kw).fit(frame, yb)
    b = DartClassifier(**kw).fit(frame.to_pandas(), yb)
    _same_model(a, b)
    assert list(a.feature_names_in_) == frame.columns
    np.testing.assert_array_equal(a.is_categorical_, [True, True, False, False, False, True])
    np.testing.assert_array_equal(a.predict_proba(frame), b.predict_proba(frame.to_pandas()))
    with pytest.raises(TypeError, match="LazyFrame"):
        a.predict(frame.lazy())


def test_category_codes_equal_the_label_lookup():
    # the fast path for pandas category columns gives what a per-row lookup gives
    rng = np.random.default_rng(0)
    labels = np.array(["b", "a", "c", "d"], dtype=object)[rng.integers(0, 4, size=200)]
    labels[::7] = None
    col = pd.Series(pd.Categorical(labels, categories=["d", "c", "b", "a"]))
    fitted = ["a", "b", "x", "c"]  # "d" unseen, "x" absent from the column
    fast = _encode(col, fitted)
    slow = _encode(col.astype(object), fitted)
    np.testing.assert_array_equal(fast, slow)
    assert np.isnan(fast[0]) and -1.0 in fast


def test_arrow_eval_set_and_early_stopping_match_pandas():
    cols, y = _data(n=1500, seed=2)
    table = _arrow_table(cols, chunks=2)
    train, valid = table.slice(0, 1100), table.slice(1100)
    kw = dict(n_estimators=40, random_state=0, min_data_per_group=5, early_stopping=True,
              n_iter_no_change=3)
    a = DartRegressor(**kw).fit(train, y[:1100], eval_set=[(valid, y[1100:])])
    b = DartRegressor(**kw).fit(train.to_pandas(), y[:1100],
                                eval_set=[(valid.to_pandas(), y[1100:])])
    _same_model(a, b)
    assert a.evals_result_ == b.evals_result_


@pytest.mark.parametrize("column", [
    pd.date_range("2020-01-01", periods=40),
    pd.date_range("2020-01-01", periods=40, tz="UTC"),
    pd.to_timedelta(np.arange(40), unit="s"),
    pd.period_range("2020-01", periods=40, freq="M"),
    np.arange(40) + 1j,
])
def test_pandas_date_and_other_non_number_columns_are_named(column):
    X = pd.DataFrame({"a": np.arange(40.0), "when": column})
    y = np.arange(40.0)
    with pytest.raises(TypeError, match="column 'when' has dtype"):
        DartRegressor(n_estimators=2).fit(X, y)
    model = DartRegressor(n_estimators=2).fit(X[["a"]].assign(when=np.arange(40.0)), y)
    with pytest.raises(TypeError, match="column 'when' has dtype"):
        model.predict(X)
