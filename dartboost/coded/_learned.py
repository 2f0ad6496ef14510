"""Learned codes: neural encoder and decoder around a frozen base model.

Kosaian, Rashmi & Venkataraman, "Learning a Code: Machine Learning for
Approximate Non-Linear Coded Computation" (2018). Unlike ParM, no parity model
is trained: the *base model itself* answers the parity queries. An encoder
network maps k queries to r parity queries, the base runs on them, and a
decoder network rebuilds missing outputs from the k + r outputs with the
missing ones zeroed. Both networks are trained end to end through the frozen
base, so the base must be differentiable: scikit-learn MLPs are translated to
an equivalent torch module, and dartboost.gpu's torch MLP/CNN estimators are
used directly.

torch is imported lazily, only by the methods that need it.
"""

import itertools
import numbers

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state

from ._base import _CodedBase
from ._codes import check_k_r, raw_output

__all__ = ["LearnedCode"]

_LOSSES = ("mse", "kl", "ce")


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "LearnedCode needs PyTorch; install it with `pip install dartboost[torch]`."
        ) from exc
    return torch


def _torch_mlp(mlp, torch):
    """A frozen torch module computing the logits of a fitted scikit-learn MLP."""
    nn = torch.nn
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": nn.Identity}
    layers = []
    n = len(mlp.coefs_)
    for i, (W, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        lin = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W.T, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers.append(lin)
        if i < n - 1:
            layers.append(acts[mlp.activation]())
    net = nn.Sequential(*layers)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _is_torch_neural(est):
    """A fitted dartboost.gpu NeuralClassifier/NeuralRegressor (a torch network inside)."""
    return hasattr(est, "module_") and hasattr(est, "_x_mean") and hasattr(est, "_x_scale")


def _torch_neural(est, torch):
    """A frozen torch module giving the raw outputs of a dartboost.gpu neural estimator.

    Reproduces its input standardisation (and, for regressors, the target
    unscaling) around a float32 copy of its network, so gradients can flow
    through it; binary classifiers give the margin ``logit_1 - logit_0`` as
    their ``decision_function`` does.
    """
    import copy

    nn = torch.nn
    img = getattr(est, "_img", None)
    binary = hasattr(est, "classes_") and len(est.classes_) == 2
    regression = hasattr(est, "_y_scale")

    class _Frozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(est.module_).float().eval()
            self.register_buffer("x_mean", torch.as_tensor(est._x_mean, dtype=torch.float32))
            self.register_buffer("x_scale", torch.as_tensor(est._x_scale, dtype=torch.float32))
            if regression:
                self.register_buffer("y_mean", torch.as_tensor(est._y_mean, dtype=torch.float32))
                self.register_buffer("y_scale",
                                     torch.as_tensor(est._y_scale, dtype=torch.float32))

        def forward(self, x):
            z = (x - self.x_mean) / self.x_scale
            if img is not None:
                z = z.reshape((-1,) + tuple(img))
            out = self.net(z)
            if regression:
                return out * self.y_scale + self.y_mean
            if binary:
                return out[:, 1:2] - out[:, 0:1]
            return out

    net = _Frozen()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _patterns(k, r):
    """Erasure patterns over the k + r slots: 1..r losses including >= 1 base slot."""
    out = []
    for m in range(1, r + 1):
        for lost in itertools.combinations(range(k + r), m):
            if min(lost) < k:
                mask = np.ones(k + r, dtype=bool)
                mask[list(lost)] = False
                out.append(mask)
    return np.array(out)


def _split_pipeline(est):
    """(preprocessing steps or None, final model) of a Pipeline or a bare model."""
    if type(est).__name__ == "Pipeline":
        return (est[:-1] if len(est.steps) > 1 else None), est.steps[-1][1]
    return None, est


class LearnedCode(_CodedBase):
    """Learned encoder/decoder networks with the frozen base run on the parity.

    Parameters
    ----------
    base_estimator : fitted MLP or dartboost.gpu Neural estimator, or a Pipeline ending in one
        The deployed model; it must be differentiable: scikit-learn MLPs
        (translated to torch once) or dartboost.gpu's torch MLP/CNN
        estimators (their network, weights frozen). Queries are flat feature
        vectors (a CNN base with ``image_shape`` set reshapes them). A
        Pipeline ending in such a network is accepted: its preprocessing
        steps are a fixed feature map and the code works on their output.
    k : int, default=2
        Queries per group, 2 to 5.
    r : int, default=1
        Parity queries per group. Any pattern of up to r missing outputs
        (base or parity) that includes a base output is trained for.
    loss : {"mse", "kl", "ce"}, default="mse"
        Loss on the erased slots: squared error to the base's raw outputs,
        KL divergence from the base's predicted distribution (classifiers),
        or cross-entropy to the labels (classifiers; ``fit`` needs ``y``).
    encoder_hidden : int, default=None
        Width of the encoder's hidden layer; ``None`` is ``k * n_features``
        (the paper's kd -> kd -> rd).
    decoder_hidden : int, default=None
        Width of the decoder's two hidden layers; ``None`` is
        ``max(64, 4 * (k + r) * n_outputs)``.
    epochs : int, default=30
    batch_size : int, default=64
        Groups per step; each step covers every erasure pattern.
    learning_rate : float, default=1e-3
        Adam step size.
    on_unrecoverable : {"default", "raise"}, default="default"
    random_state : int, RandomState or None, default=None
        Seeds the groups and the network initialisation.

    Attributes
    ----------
    encoder_net_, decoder_net_ : torch.nn.Module
    loss_curve_ : list of float
        Mean training loss per epoch.
    raw_scale_ : float
        Scale of the raw outputs; the decoder works in units of it.
    n_outputs_, n_features_in_, default_output_, pad_query_, pad_output_

    Notes
    -----
    The decoder also receives the erasure mask (k + r indicators) besides
    the zeroed outputs; the paper gives it only the zeroed outputs, but the
    mask costs nothing and disambiguates a true zero from a missing slot.
    """

    def __init__(self, base_estimator, k=2, r=1, loss="mse", encoder_hidden=None,
                 decoder_hidden=None, epochs=30, batch_size=64, learning_rate=1e-3,
                 on_unrecoverable="default", random_state=None):
        self.base_estimator = base_estimator
        self.k = k
        self.r = r
        self.loss = loss
        self.encoder_hidden = encoder_hidden
        self.decoder_hidden = decoder_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.on_unrecoverable = on_unrecoverable
        self.random_state = random_state

    def _check_params(self):
        check_k_r(self.k, self.r, k_max=5)
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}.")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        for name in ("encoder_hidden", "decoder_hidden"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, numbers.Integral) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}.")
        if not (isinstance(self.learning_rate, numbers.Real) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        _, net = _split_pipeline(self.base_estimator)
        name = type(net).__name__
        if not (hasattr(net, "coefs_") or _is_torch_neural(net)
                or name in ("MLPClassifier", "MLPRegressor", "NeuralClassifier",
                            "NeuralRegressor")):
            raise TypeError(
                f"LearnedCode runs the base model on learned parity queries and trains through "
                f"it, so the base must be differentiable (scikit-learn MLPClassifier/MLPRegressor "
                f"or dartboost.gpu NeuralClassifier/NeuralRegressor); got {name}. "
                "For tree models use CodedPredictor (parity models)."
            )
        if self.loss in ("kl", "ce") and not is_classifier(self.base_estimator):
            raise ValueError(f"loss={self.loss!r} needs a classifier base; use loss='mse'.")

    def fit(self, X, y=None):
        """Train encoder and decoder on random groups of rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            Labels, used only by ``loss="ce"``.

        Returns
        -------
        self
        """
        self._check_params()
        X, raw = self._fit_common(X)
        torch = _import_torch()
        nn = torch.nn
        # A Pipeline base: its preprocessing is a fixed feature map applied to
        # every query, and the code lives in the transformed space, where the
        # final (differentiable) network answers the parity queries.
        front, net = _split_pipeline(self.base_estimator)
        X_raw = X
        X = self._front(X)
        k, r, p, d = self.k, self.r, X.shape[1], self.n_outputs_
        self.n_code_features_ = p
        labels = None
        if self.loss == "ce":
            if y is None:
                raise ValueError("loss='ce' trains on labels: pass y to fit.")
            y = np.asarray(y)
            if y.shape[0] != X_raw.shape[0]:
                raise ValueError(f"X has {X_raw.shape[0]} rows but y has {y.shape[0]}.")
            classes = np.asarray(self.base_estimator.classes_)
            if not np.all(np.isin(y, classes)):
                raise ValueError("y contains labels the base classifier does not know.")
            labels = np.searchsorted(classes, y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        self.raw_scale_ = float(raw.std()) or 1.0
        self.patterns_ = _patterns(k, r)
        h_enc = self.encoder_hidden or k * p
        h_dec = self.decoder_hidden or max(64, 4 * (k + r) * d)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder_net_ = nn.Sequential(nn.Linear(k * p, h_enc), nn.ReLU(),
                                              nn.Linear(h_enc, r * p))
            self.decoder_net_ = nn.Sequential(
                nn.Linear((k + r) * d + (k + r), h_dec), nn.ReLU(),
                nn.Linear(h_dec, h_dec), nn.ReLU(), nn.Linear(h_dec, k * d))
        if _is_torch_neural(net):
            base = _torch_neural(net, torch)
        else:
            base = _torch_mlp(net, torch)
        self._base_net = base
        Xt = torch.as_tensor(X, dtype=torch.float32)
        raw_t = torch.as_tensor(raw, dtype=torch.float32)
        lab_t = None if labels is None else torch.as_tensor(labels)
        masks = torch.as_tensor(self.patterns_)
        params = list(self.encoder_net_.parameters()) + list(self.decoder_net_.parameters())
        opt = torch.optim.Adam(params, lr=self.learning_rate)
        self.loss_curve_ = []
        n = X.shape[0]
        for _ in range(self.epochs):
            idx = torch.as_tensor(self._random_groups(n, n, rng))  # fresh groups each epoch
            total, steps = 0.0, 0
            for s in range(0, n, self.batch_size):
                g = idx[s:s + self.batch_size]  # (B, k)
                loss = self._batch_loss(torch, base, Xt[g], raw_t[g],
                                        None if lab_t is None else lab_t[g], masks)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                steps += 1
            self.loss_curve_.append(total / steps)
        del self._base_net
        return self

    def _forward(self, torch, base, Xg, known, masks):
        """Decoded outputs (n_patterns, B, k, d) for every erasure pattern.

        ``known`` are the base slots' raw outputs (B, k, d); parity outputs
        come from running ``base`` on the encoded queries, so gradients flow
        through the frozen base into the encoder.
        """
        B = Xg.shape[0]
        k, r, d = self.k, self.r, self.n_outputs_
        P = self.encoder_net_(Xg.reshape(B, -1)).reshape(B * r, -1)
        par = base(P).reshape(B, r, d)
        allout = torch.cat([known, par], dim=1) / self.raw_scale_  # (B, k + r, d)
        m = masks.to(allout.dtype)  # (T, k + r)
        zeroed = allout[None] * m[:, None, :, None]  # (T, B, k + r, d)
        T = m.shape[0]
        inp = torch.cat([zeroed.reshape(T, B, -1), m[:, None, :].expand(T, B, -1)], dim=2)
        return self.decoder_net_(inp).reshape(T, B, k, d) * self.raw_scale_

    def _batch_loss(self, torch, base, Xg, target, labels, masks):
        F = torch.nn.functional
        dec = self._forward(torch, base, Xg, target, masks)  # (T, B, k, d)
        lost = ~masks[:, : self.k]  # (T, k): slots scored for each pattern
        sel_dec = dec.permute(0, 2, 1, 3)[lost]  # (N, B, d)
        tgt = target.permute(1, 0, 2)[None].expand(masks.shape[0], -1, -1, -1)[lost]
        if self.loss == "mse":
            return F.mse_loss(sel_dec / self.raw_scale_, tgt / self.raw_scale_)
        d = self.n_outputs_
        if d == 1:  # binary margins: Bernoulli distributions
            if self.loss == "kl":
                return F.binary_cross_entropy_with_logits(sel_dec, torch.sigmoid(tgt))
            lab = labels.T[None].expand(masks.shape[0], -1, -1)[lost].to(sel_dec.dtype)
            return F.binary_cross_entropy_with_logits(sel_dec[..., 0], lab)
        if self.loss == "kl":
            return F.kl_div(F.log_softmax(sel_dec, -1), F.log_softmax(tgt, -1),
                            log_target=True, reduction="batchmean")
        lab = labels.T[None].expand(masks.shape[0], -1, -1)[lost]
        return F.cross_entropy(sel_dec.reshape(-1, d), lab.reshape(-1))

    # ------------------------------------------------------------ code hooks
    def _front(self, X):
        front, _ = _split_pipeline(self.base_estimator)
        if front is None:
            return X
        return np.asarray(front.transform(X), dtype=np.float64)

    def _encode(self, X_group):
        torch = _import_torch()
        if _split_pipeline(self.base_estimator)[0] is not None:
            X_group = np.stack([self._front(x) for x in X_group])
        k, n, p = X_group.shape
        with torch.no_grad():
            Xg = torch.as_tensor(np.transpose(X_group, (1, 0, 2)).reshape(n, k * p),
                                 dtype=torch.float32)
            P = self.encoder_net_(Xg).reshape(n, self.r, p)
        return P.permute(1, 0, 2).double().numpy()

    def _parity_raw(self, P, j):
        p = getattr(self, "n_code_features_", self.n_features_in_)
        if P.shape[1] != p:
            raise ValueError(f"parity queries have {P.shape[1]} features, expected {p}.")
        # The base model itself (its final network, for a Pipeline) answers
        # the parity query.
        return raw_output(_split_pipeline(self.base_estimator)[1], P)

    def _decode_missing(self, base_outputs, parity_outputs, available):
        k, r = self.k, self.r
        outputs = np.array(base_outputs, dtype=np.float64, copy=True)
        missing = ~available[:k]
        outputs[missing] = np.nan
        reconstructed = np.zeros(k, dtype=bool)
        if not missing.any():
            return outputs, reconstructed, True
        if (~available).sum() > r:
            return outputs, reconstructed, False
        torch = _import_torch()
        allout = np.concatenate([np.nan_to_num(base_outputs), np.nan_to_num(parity_outputs)])
        allout[~available] = 0.0
        n = allout.shape[1]
        with torch.no_grad():
            a = torch.as_tensor(np.transpose(allout, (1, 0, 2)).reshape(n, -1) / self.raw_scale_,
                                dtype=torch.float32)
            m = torch.as_tensor(np.broadcast_to(available.astype(np.float32), (n, k + r)).copy())
            dec = self.decoder_net_(torch.cat([a, m], dim=1)).reshape(n, k, -1)
        dec = dec.double().numpy().transpose(1, 0, 2) * self.raw_scale_
        outputs[missing] = dec[missing]
        reconstructed[missing] = True
        return outputs, reconstructed, True

    def _can_decode(self, available):
        # The decoder was trained on every pattern of up to r lost outputs.
        return int((~available).sum()) <= self.r or bool(available[: self.k].all())

    def codec_size(self):
        """Parameters of the encoder and decoder networks."""
        return {"encoder_params": int(sum(p.numel() for p in self.encoder_net_.parameters())),
                "decoder_params": int(sum(p.numel() for p in self.decoder_net_.parameters()))}
