"""Export fitted models to ONNX (ai.onnx.ml tree ensembles) and Treelite.

Each tree's DART weight is folded into its leaf values and the baseline
becomes the ensemble's base value, so the exported model computes exactly
``baseline + sum_t w_t f_t(x)``. Missing values (NaN) follow each split's
learned direction (ONNX ``nodes_missing_value_tracks_true``, Treelite
``default_left``).

``onnx`` and ``treelite`` are optional (the ``export`` extra): imported only
when these functions are called.
"""
import numpy as np

from ._tree_view import ensemble_view, require_numerical

__all__ = ["to_onnx", "to_treelite"]

_ONNX_ML_OPSET = 3  # the version whose tree ensembles take float64 attributes
_ONNX_OPSET = 17


def _check_exportable(view):
    if not view.trees:
        raise ValueError("The model has no trees to export.")
    if view.estimator_class == "DartRegressor" and view.link not in ("identity", "log"):
        raise ValueError(f"Cannot export a regressor with link {view.link!r}.")


def _treelite_categories(values):
    """A split's left categories as Treelite's (uint32) category list."""
    ints = values.astype(np.int64)
    if not (np.all(ints == values) and np.all((ints >= 0) & (ints < 2**32))):
        raise ValueError("Treelite export needs categories that are integers in [0, 2**32) "
                         "(pandas/string categories are encoded so); this model's raw "
                         f"categories include {values[:5].tolist()}.")
    return [int(v) for v in ints]


def _round_down_float32(threshold):
    """Largest float32 ``<=`` each threshold: for float32 inputs ``x``,
    ``x <= t`` holds exactly when ``x <= _round_down_float32(t)``, so a
    float32 graph makes the same decisions as the float64 model."""
    t32 = threshold.astype(np.float32)
    too_big = t32.astype(np.float64) > threshold
    t32[too_big] = np.nextafter(t32[too_big], np.float32(-np.inf))
    return t32


def _onnx_tree_attributes(view, float32):
    """The node and leaf attribute lists shared by both tree-ensemble ops."""
    a = {k: [] for k in ("tree", "node", "feature", "mode", "value", "true", "false",
                         "missing", "leaf_tree", "leaf_node", "leaf_target", "leaf_weight")}
    for j, tree in enumerate(view.trees):
        n = tree.n_nodes
        leaf = tree.is_leaf
        a["tree"] += [j] * n
        a["node"] += list(range(n))
        a["feature"] += np.where(leaf, 0, tree.feature).tolist()
        a["mode"] += ["LEAF" if lf else "BRANCH_LEQ" for lf in leaf]
        thr = np.where(leaf, 0.0, tree.threshold)
        # +inf (every non-missing value goes left) is kept: ONNX compares x <= inf
        a["value"].append(_round_down_float32(thr) if float32 else thr)
        a["true"] += np.where(leaf, 0, tree.left).tolist()
        a["false"] += np.where(leaf, 0, tree.right).tolist()
        a["missing"] += (tree.missing_left & ~leaf).astype(int).tolist()
        leaves = np.flatnonzero(leaf)
        a["leaf_tree"] += [j] * leaves.size
        a["leaf_node"] += leaves.tolist()
        a["leaf_target"] += [tree.output] * leaves.size
        a["leaf_weight"].append(tree.weight * tree.value[leaves])
    a["value"] = np.concatenate(a["value"])
    a["leaf_weight"] = np.concatenate(a["leaf_weight"])
    return a


def _class_label_attribute(classes):
    classes = np.asarray(classes)
    if classes.dtype.kind in "US":
        return {"classlabels_strings": [str(c) for c in classes]}, "string"
    if classes.dtype.kind in "biu" or (classes.dtype.kind == "f"
                                       and np.all(classes == np.round(classes))):
        return {"classlabels_int64s": [int(c) for c in classes]}, "int64"
    raise ValueError("ONNX class labels must be integers or strings; this model's classes "
                     f"are {classes.dtype} values {classes[:5].tolist()}.")


def to_onnx(model, *, input_dtype="float64", name="dartboost"):
    """The model as an ONNX graph of one ai.onnx.ml tree-ensemble operator.

    Parameters
    ----------
    model : fitted dartboost estimator, its ``booster_``, or an EnsembleView
    input_dtype : {"float64", "float32"}, default="float64"
        Type of the input ``X``. ``float64`` keeps thresholds and leaf values
        in double precision; ``float32`` rounds each threshold down to the
        nearest float32 (float32 inputs take the same branches as in the
        float64 model) and leaf values to float32.
    name : str, default="dartboost"
        Graph name.

    Returns
    -------
    onnx.ModelProto
        Input ``X`` of shape ``(N, n_features)``, NaN for missing. Regressors
        and rankers: ``TreeEnsembleRegressor`` with output ``variable``
        ``(N, n_outputs)`` (``exp`` applied for ``loss="poisson"``).
        Classifiers: ``TreeEnsembleClassifier`` with outputs ``label`` ``(N,)``
        and ``probabilities`` ``(N, n_classes)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if input_dtype not in ("float64", "float32"):
        raise ValueError(f"input_dtype must be 'float64' or 'float32', got {input_dtype!r}.")
    view = ensemble_view(model)
    _check_exportable(view)
    # ai.onnx.ml TreeEnsemble (opset 3) has no set-membership node mode
    require_numerical(view, "ONNX export (ai.onnx.ml TreeEnsemble has no set-membership "
                            "node mode)")
    float32 = input_dtype == "float32"
    a = _onnx_tree_attributes(view, float32)

    def real(attr, values):
        # float32: plain float lists; float64: the *_as_tensor attributes
        values = np.asarray(values, dtype=np.float64)
        if float32:
            return {attr: values.astype(np.float32).tolist()}
        return {attr + "_as_tensor": numpy_helper.from_array(values, attr)}

    common = dict(
        nodes_treeids=a["tree"], nodes_nodeids=a["node"], nodes_featureids=a["feature"],
        nodes_modes=a["mode"], nodes_truenodeids=a["true"], nodes_falsenodeids=a["false"],
        nodes_missing_value_tracks_true=a["missing"],
        **(({"nodes_values": a["value"].tolist()}) if float32
           else {"nodes_values_as_tensor": numpy_helper.from_array(a["value"], "nodes_values")}),
        **real("base_values", view.baseline),
    )
    in_type = TensorProto.FLOAT if float32 else TensorProto.DOUBLE
    inputs = [helper.make_tensor_value_info("X", in_type, [None, view.n_features])]
    nodes = []
    if view.estimator_class == "DartClassifier":
        labels, label_kind = _class_label_attribute(view.classes)
        n_classes = len(view.classes)
        nodes.append(helper.make_node(
            "TreeEnsembleClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
            class_treeids=a["leaf_tree"], class_nodeids=a["leaf_node"],
            class_ids=a["leaf_target"], **real("class_weights", a["leaf_weight"]),
            post_transform="LOGISTIC" if view.link == "logistic" else "SOFTMAX",
            **labels, **common))
        label_type = TensorProto.STRING if label_kind == "string" else TensorProto.INT64
        outputs = [helper.make_tensor_value_info("label", label_type, [None]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                 [None, n_classes])]
    else:
        raw = "raw_score" if view.link == "log" else "variable"
        nodes.append(helper.make_node(
            "TreeEnsembleRegressor", ["X"], [raw], domain="ai.onnx.ml",
            n_targets=view.n_outputs, target_treeids=a["leaf_tree"],
            target_nodeids=a["leaf_node"], target_ids=a["leaf_target"],
            **real("target_weights", a["leaf_weight"]), aggregate_function="SUM",
            post_transform="NONE", **common))
        if view.link == "log":
            nodes.append(helper.make_node("Exp", [raw], ["variable"]))
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT,
                                                 [None, view.n_outputs])]
    graph = helper.make_graph(nodes, name, inputs, outputs)
    onnx_model = helper.make_model(graph, producer_name="dartboost", opset_imports=[
        helper.make_opsetid("", _ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", _ONNX_ML_OPSET)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model


_TREELITE_TASKS = {"logistic": ("kBinaryClf", "sigmoid"), "softmax": ("kMultiClf", "softmax"),
                   "log": ("kRegressor", "exponential"), "identity": ("kRegressor", "identity")}


def to_treelite(model):
    """The model as a Treelite model (its model-builder API), for
    ``treelite.gtil.predict``, TL2cgen or Triton's FIL backend.

    Thresholds and leaf values stay float64. Multiclass trees feed their
    class (``class_id``), multi-output regression trees their target
    (``target_id``). ``gtil.predict(m, X)`` returns probabilities (classifiers)
    or predictions; ``pred_margin=True`` the raw scores.
    """
    from treelite.model_builder import (Metadata, ModelBuilder, PostProcessorFunc,
                                        TreeAnnotation)

    view = ensemble_view(model)
    _check_exportable(view)
    task, postprocessor = _TREELITE_TASKS[view.link]
    if view.estimator_class == "DartRanker":
        task = "kLearningToRank"
    K = view.n_outputs
    T = len(view.trees)
    if task == "kMultiClf":
        metadata = Metadata(num_feature=view.n_features, task_type=task,
                            average_tree_output=False, num_target=1, num_class=[K],
                            leaf_vector_shape=(1, 1))
        annotation = TreeAnnotation(num_tree=T, target_id=[0] * T,
                                    class_id=[t.output for t in view.trees])
    else:
        metadata = Metadata(num_feature=view.n_features, task_type=task,
                            average_tree_output=False, num_target=K, num_class=[1] * K,
                            leaf_vector_shape=(1, 1))
        annotation = TreeAnnotation(num_tree=T, target_id=[t.output for t in view.trees],
                                    class_id=[0] * T)
    builder = ModelBuilder(threshold_type="float64", leaf_output_type="float64",
                           metadata=metadata, tree_annotation=annotation,
                           postprocessor=PostProcessorFunc(name=postprocessor),
                           base_scores=[float(b) for b in view.baseline])
    for tree in view.trees:
        builder.start_tree()
        for node in range(tree.n_nodes):
            builder.start_node(node)
            if tree.left[node] < 0:
                builder.leaf(float(tree.weight * tree.value[node]))
            elif tree.categories is not None and tree.categories[node] is not None:
                builder.categorical_test(
                    int(tree.feature[node]), default_left=bool(tree.missing_left[node]),
                    category_list=_treelite_categories(tree.categories[node]),
                    category_list_right_child=False, left_child_key=int(tree.left[node]),
                    right_child_key=int(tree.right[node]))
            else:
                builder.numerical_test(int(tree.feature[node]), float(tree.threshold[node]),
                                       default_left=bool(tree.missing_left[node]),
                                       opname="<=", left_child_key=int(tree.left[node]),
                                       right_child_key=int(tree.right[node]))
            builder.end_node()
        builder.end_tree()
    return builder.commit()
