"""scikit-learn's estimator checks over every dartboost tree estimator."""
from sklearn.utils.estimator_checks import parametrize_with_checks

from dartboost import DartClassifier, DartRegressor

# Checks that fail for a documented reason (the same ones scikit-learn marks
# for its own HistGradientBoosting estimators).
_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "bin thresholds come from unweighted quantiles and min_samples_leaf counts rows, so "
        "an integer weight is not the same as repeating a row"
    ),
    # the same reason, on the same data given as a sparse matrix (sparse input
    # gives exactly the dense model: tests/test_sparse.py)
    "check_sample_weight_equivalence_on_sparse_data": (
        "bin thresholds come from unweighted quantiles and min_samples_leaf counts rows, so "
        "an integer weight is not the same as repeating a row"
    ),
}


def _expected(estimator):
    return _EXPECTED_FAILURES


@parametrize_with_checks(
    [
        DartRegressor(n_estimators=10, min_samples_leaf=1, random_state=0),
        DartRegressor(boosting="mart", n_estimators=10, min_samples_leaf=1, random_state=0),
        DartClassifier(n_estimators=10, min_samples_leaf=1, random_state=0),
        DartClassifier(boosting="mart", n_estimators=10, min_samples_leaf=1, random_state=0),
        DartClassifier(class_weight="balanced", n_estimators=10, min_samples_leaf=1,
                       random_state=0),
    ],
    expected_failed_checks=_expected,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_default_classifier_reports_the_single_weighted_class():
    """Issue 14: ``DartClassifier()`` with default parameters failed
    ``check_classifiers_one_label_sample_weights`` (a ZeroDivisionError)."""
    from sklearn.utils.estimator_checks import check_classifiers_one_label_sample_weights
    check_classifiers_one_label_sample_weights("DartClassifier", DartClassifier())
    import numpy as np
    import pytest
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = np.array(["a", "b", "c"] * 10)
    with pytest.raises(ValueError, match="class 'b'"):
        DartClassifier().fit(X, y, sample_weight=(y == "b").astype(float))
