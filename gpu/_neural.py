"""Neural-network estimators with the scikit-learn API (torch backend).

``NeuralClassifier`` and ``NeuralRegressor`` train a multi-layer perceptron (or,
with ``architecture='cnn'``, a small convolutional network for image arrays) with
Adam on mini-batches.  Inputs are standardised internally (and regression
targets too), so raw features work without a scaler.  Inference can run through
an ABFT-protected copy of the network (``abft='auto'|'global'|'tile'``), which
raises :class:`dartboost.gpu.ABFTFaultError` (or recomputes / flags, see
``on_fault``) when a silent fault corrupts a GEMM.

Pickles hold the weights as CPU tensors and the device *setting*, not a device:
a model trained on a GPU unpickles on a CPU-only machine, and ``device='auto'``
then predicts on the CPU.
"""
import numbers
import warnings
import weakref

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ._lazy import torch

__all__ = ["NeuralClassifier", "NeuralRegressor"]

_ACTIVATIONS = ("relu", "tanh", "gelu")
_NO_Y = object()
_INFERENCE_CACHE = weakref.WeakKeyDictionary()


def _resolve_device(device):
    t = torch()
    if device == "auto":
        return t.device("cuda" if t.cuda.is_available() else "cpu")
    if device == "cpu":
        return t.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        if not t.cuda.is_available():
            raise RuntimeError(
                f"device={device!r} but CUDA is not available here; use "
                "set_params(device='cpu') or device='auto'")
        return t.device(device)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")


def _build_network(spec):
    """Build the torch module described by ``spec`` (a plain dict, picklable)."""
    t = torch()
    nn = t.nn
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[spec["activation"]]
    layers = []
    if spec["architecture"] == "cnn":
        c, h, w = spec["image_shape"]
        for ch in spec["conv_channels"]:
            layers += [nn.Conv2d(c, ch, 3, padding=1), act()]
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = ch
        layers.append(nn.Flatten())
        width = c * h * w
    else:
        width = spec["n_inputs"]
    for hid in spec["hidden_layer_sizes"]:
        layers += [nn.Linear(width, hid), act()]
        width = hid
    layers.append(nn.Linear(width, spec["n_outputs"]))
    return nn.Sequential(*layers)


class _BaseNeural(BaseEstimator):
    """Shared training/inference logic of the neural estimators."""

    def __init__(self, hidden_layer_sizes=(100,), *, architecture="mlp", image_shape=None,
                 conv_channels=(16, 32), activation="relu", alpha=1e-4, batch_size="auto",
                 learning_rate_init=1e-3, max_iter=200, tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, device="auto", abft="off",
                 on_fault="raise", random_state=None, verbose=False, warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.architecture = architecture
        self.image_shape = image_shape
        self.conv_channels = conv_channels
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.device = device
        self.abft = abft
        self.on_fault = on_fault
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ---------------------------------------------------------------- validation
    def _check_params(self):
        hls = self.hidden_layer_sizes
        if isinstance(hls, numbers.Integral):
            hls = (hls,)
        hls = tuple(hls)
        if any(not isinstance(h, numbers.Integral) or h < 1 for h in hls):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {hls!r}")
        if self.architecture not in ("mlp", "cnn"):
            raise ValueError(f"architecture must be 'mlp' or 'cnn', got {self.architecture!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        for name in ("max_iter", "n_iter_no_change"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.learning_rate_init, numbers.Real)
                and self.learning_rate_init > 0):
            raise ValueError("learning_rate_init must be > 0")
        if not (isinstance(self.alpha, numbers.Real) and self.alpha >= 0):
            raise ValueError("alpha must be >= 0")
        if not (0 < self.validation_fraction < 1):
            raise ValueError("validation_fraction must be in (0, 1)")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, numbers.Integral)
                                              and self.batch_size >= 1):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got "
                             f"{self.batch_size!r}")
        if self.abft not in ("off", "auto", "global", "tile"):
            raise ValueError(f"abft must be 'off', 'auto', 'global' or 'tile', got {self.abft!r}")
        if self.on_fault not in ("raise", "recompute", "flag"):
            raise ValueError(f"on_fault must be 'raise', 'recompute' or 'flag', got "
                             f"{self.on_fault!r}")
        return hls

    def _validate_X(self, X, reset, y=_NO_Y):
        allow_nd = self.architecture == "cnn"
        kw = dict(dtype=np.float32, allow_nd=allow_nd, reset=reset)
        if y is _NO_Y:
            X = validate_data(self, X, **kw)
        else:
            X, y = validate_data(self, X, y, multi_output=isinstance(self, RegressorMixin),
                                 y_numeric=isinstance(self, RegressorMixin), **kw)
        return X, y

    def _image_shape(self, X):
        if self.architecture != "cnn":
            return None
        if X.ndim == 4:
            return tuple(X.shape[1:])
        if X.ndim == 3:
            return (1,) + tuple(X.shape[1:])
        if self.image_shape is None:
            raise ValueError("architecture='cnn' needs 3-D/4-D image arrays or image_shape")
        shape = tuple(self.image_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(f"image_shape {shape} does not match {X.shape[1]} features")
        return shape

    # ---------------------------------------------------------------- tensors
    def _to_tensor(self, X, device):
        t = torch()
        Xs = (X.reshape(len(X), -1) - self._x_mean) / self._x_scale
        if self.architecture == "cnn":
            Xs = Xs.reshape((len(X),) + self._img)
        return t.as_tensor(np.ascontiguousarray(Xs, dtype=np.float32), device=device)

    def _batch_size(self, n):
        return min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)

    def _init_network(self, X, n_outputs, hls, seed):
        t = torch()
        self._img = self._image_shape(X)
        flat = X.reshape(len(X), -1)
        self._x_mean = flat.mean(0).astype(np.float64)
        scale = flat.std(0).astype(np.float64)
        scale[scale < 1e-12] = 1.0  # constant features: leave unscaled
        self._x_scale = scale
        self._spec = {"architecture": self.architecture, "image_shape": self._img,
                      "conv_channels": tuple(self.conv_channels), "activation": self.activation,
                      "hidden_layer_sizes": hls, "n_inputs": flat.shape[1],
                      "n_outputs": n_outputs}
        with t.random.fork_rng(devices=[]):
            t.manual_seed(seed)
            self.module_ = _build_network(self._spec)
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self.validation_scores_ = [] if self.early_stopping else None
        self._optim_state = None

    def _optimizer(self, module):
        t = torch()
        opt = t.optim.Adam(module.parameters(), lr=self.learning_rate_init,
                           weight_decay=self.alpha)
        if self._optim_state is not None:
            opt.load_state_dict(self._optim_state)
        return opt

    def _fit(self, X, y_t, rng_seed, epochs, X_val=None, y_val=None, check_convergence=True):
        """Run ``epochs`` epochs of Adam; returns the module on the CPU afterwards."""
        t = torch()
        dev = _resolve_device(self.device)
        module = self.module_.to(dev)
        module.train()
        opt = self._optimizer(module)
        Xt = self._to_tensor(X, dev)
        Yt = y_t.to(dev)
        n = len(Xt)
        bs = self._batch_size(n)
        gen = t.Generator(device="cpu").manual_seed(int(rng_seed))
        no_improve = 0
        best_state = None
        best_val = -np.inf
        for _ in range(epochs):
            perm = t.randperm(n, generator=gen).to(dev)
            total = 0.0
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                opt.zero_grad(set_to_none=True)
                loss = self._loss(module(Xt[idx]), Yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.n_iter_ += 1
            epoch_loss = total / n
            self.loss_curve_.append(epoch_loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {epoch_loss:.8f}")
            if X_val is not None:
                score = self._val_score(module, X_val, y_val, dev)
                self.validation_scores_.append(score)
                if score > best_val + self.tol:
                    best_val, no_improve = score, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    no_improve += 1
                self.best_validation_score_ = max(best_val, score)
            else:
                if epoch_loss < self.best_loss_ - self.tol:
                    no_improve = 0
                else:
                    no_improve += 1
                self.best_loss_ = min(self.best_loss_, epoch_loss)
            if not np.isfinite(epoch_loss):
                raise ValueError("training diverged (non-finite loss); lower "
                                 "learning_rate_init")
            if no_improve >= self.n_iter_no_change:
                break
        else:
            if check_convergence and epochs == self.max_iter:
                warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if best_state is not None:
            # Early stopping returns the model that scored best, with exactly its weights.
            module.load_state_dict(best_state)
        self._optim_state = _to_cpu(opt.state_dict())
        self.module_ = module.cpu().eval()
        _INFERENCE_CACHE.pop(self, None)
        return self

    def _val_score(self, module, X_val, y_val, dev):
        t = torch()
        module.eval()
        with t.no_grad():
            out = module(self._to_tensor(X_val, dev)).cpu().numpy()
        module.train()
        return self._score_raw(out, y_val)

    # ---------------------------------------------------------------- inference
    def _forward(self, X):
        t = torch()
        check_is_fitted(self, "module_")
        X, _ = self._validate_X(X, reset=False)
        dev = _resolve_device(self.device)
        module = self._inference_module(dev)
        Xt = self._to_tensor(X, dev)
        if dev.type == "cpu":
            Xt = Xt.double()
        outs = []
        with t.no_grad():
            for i in range(0, len(Xt), 4096):
                outs.append(module(Xt[i:i + 4096]).cpu())
        return t.cat(outs).double().numpy()

    def _inference_module(self, dev):
        # On the CPU, predict in float64: float32 GEMMs block differently by batch
        # size, and predictions must not depend on which other rows are in the batch.
        key = (self.abft, self.on_fault, str(dev), id(self.module_))
        hit = _INFERENCE_CACHE.get(self)
        if hit is not None and hit[0] == key:
            return hit[1]
        if True:
            import copy
            net = copy.deepcopy(self.module_).to(dev).eval()
            if dev.type == "cpu":
                net = net.double()
            if self.abft != "off":
                from ._protect import protect
                net = protect(net, scheme=self.abft, on_fault=self.on_fault, warn=False)
            # Cached outside __dict__: predict must not change the estimator's state.
            _INFERENCE_CACHE[self] = (key, net)
        return net

    @property
    def protected_module_(self):
        """The ABFT-protected network used by predict (``None`` while ``abft='off'``)."""
        check_is_fitted(self, "module_")
        if self.abft == "off":
            return None
        return self._inference_module(_resolve_device(self.device))

    # ---------------------------------------------------------------- pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        if "module_" in state:
            state["module_"] = None
            state["_module_state"] = {k: v.detach().cpu().clone()
                                      for k, v in self.module_.state_dict().items()}
        return state

    def __setstate__(self, state):
        module_state = state.pop("_module_state", None)
        self.__dict__.update(state)
        if module_state is not None:
            self.module_ = _build_network(self._spec)
            self.module_.load_state_dict(module_state)
            self.module_.eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def _to_cpu(obj):
    t = torch()
    if isinstance(obj, t.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


class NeuralClassifier(ClassifierMixin, _BaseNeural):
    """Multi-layer perceptron (or small CNN) classifier trained with torch.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the hidden fully connected layers.
    architecture : {'mlp', 'cnn'}, default='mlp'
        ``'cnn'``: ``conv3x3 -> act -> maxpool2`` per entry of ``conv_channels``,
        then the hidden layers.  ``X`` is then ``(n, C, H, W)``, ``(n, H, W)``,
        or flat with ``image_shape``.
    image_shape : tuple, optional
        ``(C, H, W)`` or ``(H, W)`` of flat image rows.
    conv_channels : tuple of int, default=(16, 32)
    activation : {'relu', 'tanh', 'gelu'}, default='relu'
    alpha : float, default=1e-4
        L2 penalty (Adam weight decay).
    batch_size : int or 'auto', default='auto'
        ``min(200, n_samples)`` when 'auto'.
    learning_rate_init : float, default=1e-3
    max_iter : int, default=200
        Epochs.
    tol : float, default=1e-4
    n_iter_no_change : int, default=10
        Epochs without improvement (training loss, or validation score with
        early stopping) before stopping.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` (stratified) and return the weights of
        the epoch with the best validation accuracy.
    validation_fraction : float, default=0.1
    device : {'auto', 'cpu', 'cuda', 'cuda:i'}, default='auto'
        Where to train and predict; 'auto' uses CUDA when available.
    abft : {'off', 'auto', 'global', 'tile'}, default='off'
        ABFT scheme for inference (see :func:`dartboost.gpu.protect`).
    on_fault : {'raise', 'recompute', 'flag'}, default='raise'
    random_state : int, RandomState or None
        Seeds initialisation, shuffling and the validation split.
    verbose : bool, default=False
    warm_start : bool, default=False
        Continue from the current weights on ``fit``.

    Attributes
    ----------
    classes_ : ndarray
    module_ : torch.nn.Module
        The trained network (on the CPU between calls).
    n_iter_ : int
    loss_curve_ : list of float
    validation_scores_ : list of float or None
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from dartboost.gpu import NeuralClassifier
    >>> X, y = make_classification(200, 10, random_state=0)
    >>> clf = NeuralClassifier((32,), max_iter=50, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    def _loss(self, out, target):
        return torch().nn.functional.cross_entropy(out, target)

    def _score_raw(self, out, y_val):
        return float(np.mean(out.argmax(1) == y_val))

    def fit(self, X, y):
        """Fit the network to ``X, y`` (``max_iter`` epochs at most).

        Returns
        -------
        self
        """
        hls = self._check_params()
        X, y = self._validate_X(X, reset=True, y=y)
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"NeuralClassifier supports binary/multiclass targets, got "
                             f"{type_of_target(y)}")
        enc = LabelEncoder().fit(y)
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        self._pf_seed = seed
        if not (self.warm_start and hasattr(self, "module_")
                and np.array_equal(getattr(self, "classes_", None), enc.classes_)):
            self.classes_ = enc.classes_
            self._init_network(X, max(2, len(self.classes_)), hls, seed)
        y_enc = enc.transform(y)
        X_val = y_val = None
        if self.early_stopping:
            try:
                X, X_val, y_enc, y_val = train_test_split(
                    X, y_enc, test_size=self.validation_fraction,
                    random_state=seed % (2 ** 31), stratify=y_enc)
            except ValueError:  # a class too small to stratify: plain split
                X, X_val, y_enc, y_val = train_test_split(
                    X, y_enc, test_size=self.validation_fraction,
                    random_state=seed % (2 ** 31))
        return self._fit(X, torch().as_tensor(y_enc, dtype=torch().long), seed + 1,
                         self.max_iter, X_val, y_val)

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``X, y``; ``classes`` is required on the first call.

        Returns
        -------
        self
        """
        first = not hasattr(self, "module_")
        hls = self._check_params()
        X, y = self._validate_X(X, reset=first, y=y)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(classes)
            rs = check_random_state(self.random_state)
            self._pf_seed = int(rs.randint(np.iinfo(np.int32).max))
            self._init_network(X, max(2, len(self.classes_)), hls, self._pf_seed)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError("classes differ from those of the first partial_fit call")
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if len(unknown):
            raise ValueError(f"labels {unknown.tolist()} are not in classes_")
        y_enc = np.searchsorted(self.classes_, y)
        return self._fit(X, torch().as_tensor(y_enc, dtype=torch().long),
                         self._pf_seed + self.n_iter_ + 1, 1, check_convergence=False)

    def predict_proba(self, X):
        """Class probabilities, shape ``(n_samples, n_classes)``."""
        out = self._forward(X)
        out -= out.max(1, keepdims=True)
        p = np.exp(out)
        p /= p.sum(1, keepdims=True)
        return p[:, :len(self.classes_)] if len(self.classes_) > 1 else p[:, :1] * 0 + 1

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X):
        """Raw network outputs (logits); ``(n,)`` for binary problems."""
        out = self._forward(X)
        if len(self.classes_) == 2:
            return out[:, 1] - out[:, 0]
        return out

    def predict(self, X):
        """Predicted class labels."""
        out = self._forward(X)
        return self.classes_[np.argmax(out[:, :max(1, len(self.classes_))], axis=1)]


class NeuralRegressor(RegressorMixin, _BaseNeural):
    """Multi-layer perceptron (or small CNN) regressor trained with torch.

    Parameters are those of :class:`NeuralClassifier`; the loss is the mean
    squared error on internally standardised targets, and early stopping scores
    with R^2 on the held-out fraction.  ``y`` may be 2-D (multi-output).

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from dartboost.gpu import NeuralRegressor
    >>> X, y = make_regression(200, 5, noise=1.0, random_state=0)
    >>> reg = NeuralRegressor((32,), max_iter=100, random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    def _loss(self, out, target):
        return torch().nn.functional.mse_loss(out, target)

    def _score_raw(self, out, y_val):
        resid = ((out - y_val) ** 2).sum()
        total = ((y_val - y_val.mean(0)) ** 2).sum()
        return float(1 - resid / total) if total > 0 else 0.0

    def _prep_y(self, y):
        y = np.asarray(y, dtype=np.float64)
        return y.reshape(len(y), -1)

    def fit(self, X, y):
        """Fit the network to ``X, y``.

        Returns
        -------
        self
        """
        hls = self._check_params()
        X, y = self._validate_X(X, reset=True, y=y)
        y2 = self._prep_y(y)
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        self._pf_seed = seed
        if not (self.warm_start and hasattr(self, "module_")
                and self._spec["n_outputs"] == y2.shape[1]):
            self._y_1d = y.ndim == 1
            self._y_mean = y2.mean(0)
            sd = y2.std(0)
            sd[sd < 1e-12] = 1.0
            self._y_scale = sd
            self._init_network(X, y2.shape[1], hls, seed)
        ys = ((y2 - self._y_mean) / self._y_scale).astype(np.float32)
        X_val = y_val = None
        if self.early_stopping:
            X, X_val, ys, y_val = train_test_split(
                X, ys, test_size=self.validation_fraction, random_state=seed % (2 ** 31))
        return self._fit(X, torch().as_tensor(ys), seed + 1, self.max_iter, X_val, y_val)

    def partial_fit(self, X, y):
        """One epoch over ``X, y`` (target scaling is fixed by the first call).

        Returns
        -------
        self
        """
        first = not hasattr(self, "module_")
        hls = self._check_params()
        X, y = self._validate_X(X, reset=first, y=y)
        y2 = self._prep_y(y)
        if first:
            rs = check_random_state(self.random_state)
            self._pf_seed = int(rs.randint(np.iinfo(np.int32).max))
            self._y_1d = y.ndim == 1
            self._y_mean = y2.mean(0)
            sd = y2.std(0)
            sd[sd < 1e-12] = 1.0
            self._y_scale = sd
            self._init_network(X, y2.shape[1], hls, self._pf_seed)
        elif y2.shape[1] != self._spec["n_outputs"]:
            raise ValueError("y has a different number of outputs than in the first call")
        ys = ((y2 - self._y_mean) / self._y_scale).astype(np.float32)
        return self._fit(X, torch().as_tensor(ys), self._pf_seed + self.n_iter_ + 1, 1,
                         check_convergence=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.regressor_tags.poor_score = False
        return tags

    def predict(self, X):
        """Predicted targets, ``(n,)`` or ``(n, n_outputs)``."""
        out = self._forward(X) * self._y_scale + self._y_mean
        return out[:, 0] if self._y_1d else out
