"""dump_model (strict JSON that predicts like the model) and trees_to_dataframe."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from dartboost import DartClassifier, DartRegressor
from dartboost.inspection import dump_model, trees_to_dataframe


def _predict_from_dump(dump, X):
    """Evaluate the dumped JSON on X, with nothing but the documented schema."""
    raw = np.tile(np.asarray(dump["baseline"]), (X.shape[0], 1))
    for tree in dump["trees"]:
        nodes = tree["nodes"]
        for i, x in enumerate(X):
            node = nodes[0]
            while "leaf_value" not in node:
                v = x[node["feature"]]
                t = node["threshold"]
                if np.isnan(v):
                    go_left = node["missing"] == "left"
                else:
                    go_left = t is None or v <= t
                node = nodes[node["left"] if go_left else node["right"]]
            raw[i, tree["output"]] += tree["weight"] * node["leaf_value"]
    return raw


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(300, 4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=0)
    X[::7, 1] = np.nan
    frame = pd.DataFrame(X, columns=["age", "height", "weight", "score"])
    labels = np.array(["cat", "dog", "eel"])[y]
    est = DartClassifier(n_estimators=6, max_leaf_nodes=5, skip_drop=0.0, drop_rate=0.5,
                         random_state=0, early_stopping=False).fit(frame, labels)
    return est, X


def test_dump_is_strict_json_and_predicts_like_the_model(multiclass):
    est, X = multiclass
    dump = dump_model(est)
    text = json.dumps(dump, allow_nan=False)  # no NaN/inf may leak into the JSON
    dump = json.loads(text)
    assert dump["format"] == "dartboost-dump" and dump["version"] == 1
    assert dump["classes"] == ["cat", "dog", "eel"]
    assert dump["feature_names"] == ["age", "height", "weight", "score"]
    assert dump["link"] == "softmax" and dump["n_outputs"] == 3
    assert len(dump["trees"]) == 3 * dump["n_iterations"]
    np.testing.assert_allclose(_predict_from_dump(dump, X),
                               est.decision_function(pd.DataFrame(X, columns=dump["feature_names"])),
                               atol=1e-12)


def test_dump_of_a_regressor_predicts_like_it():
    X = np.r_[np.zeros(50), np.ones(50)].reshape(-1, 1)
    y = np.r_[np.zeros(50), np.ones(50)]
    est = DartRegressor(n_estimators=3, boosting="mart", min_samples_leaf=5,
                        early_stopping=False).fit(X, y)
    dump = json.loads(json.dumps(dump_model(est), allow_nan=False))
    np.testing.assert_allclose(_predict_from_dump(dump, X), est.predict(X)[:, None],
                               atol=1e-12)


def test_trees_to_dataframe(multiclass):
    est, X = multiclass
    df = trees_to_dataframe(est)
    n_nodes = sum(len(t["nodes"]) for t in dump_model(est)["trees"])
    assert len(df) == n_nodes
    splits = df[~df.is_leaf]
    assert set(splits.split_feature) <= {"age", "height", "weight", "score"}
    # children's counts add up to their parent's
    for (tree, node), row in splits.set_index(["tree_index", "node_index"]).iterrows():
        kids = df[(df.tree_index == tree) & (df.parent_index == node)]
        assert kids["count"].sum() == row["count"] and len(kids) == 2
    np.testing.assert_allclose(df.weighted_value, df.tree_weight * df.value)
    assert df.loc[df.is_leaf, "threshold"].isna().all()
    assert (df.loc[df.node_index == 0, "parent_index"] == -1).all()
