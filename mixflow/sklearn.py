"""A scikit-learn face for mixflow: ``MixtureEstimator`` fits a declared model in pipelines and grid searches.

Needs scikit-learn (``pip install mixflow[sklearn]``)::

    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from mixflow.sklearn import MixtureEstimator

    search = GridSearchCV(make_pipeline(StandardScaler(), MixtureEstimator(mixflow.GaussianMixture(2),
                                                                           random_state=0)),
                          {"mixtureestimator__n_components": [1, 2, 3, 4]}, cv=5)
    search.fit(faithful)          # K chosen by the held-out log-likelihood (score)
    search.best_estimator_[-1].tree_   # the fitted mixflow container

scikit-learn's ``check_estimator`` runs in ``tests/test_sklearn.py``; the checks expected to fail are
listed there (``EXPECTED_FAILED_CHECKS``) with the reason for each.
"""

import contextlib
import dataclasses

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, DensityMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from mixflow.arguments import check_count, check_integer
from mixflow.errors import InputError, InputTypeError
from mixflow.families.base import MixtureModel
from mixflow.families.gaussian.model import GaussianMixture
from mixflow.fitting import fit, option_names, predict, predict_proba, sample, score_samples

__all__ = ["MixtureEstimator"]

_FIT_METHODS = ("em", "map", "mcmc", "advi")


#: Options of :func:`mixflow.fit` that the estimator takes under scikit-learn's names, and how
_RENAMED = {"random_seed": "the seed as random_state (scikit-learn's name)",
            "weights": "frequency weights as fit(X, sample_weight=...) (scikit-learn's name)"}


#: The options of :func:`mixflow.fit` that ``set_params`` takes though ``__init__`` was not given them
_SETTABLE_OPTIONS = frozenset(option_names() - set(_RENAMED))


@contextlib.contextmanager
def _named_as(name: str, ours: str):
    """An error about mixflow's argument ``name`` re-raised naming the estimator's, ``ours`` (its message's start)."""
    try:
        yield
    except InputError as error:
        message = str(error)
        if not message.startswith(f"{name}:"):
            raise
        raise type(error)(ours + message[len(name):]) from None


def _precisions(covariances: np.ndarray, covariance: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``precisions_cholesky_`` and ``precisions_`` of these covariances, in its shapes.

    For full and tied covariances, the upper-triangular ``U`` with ``precision = U @ U.T``
    (``GaussianMixture``'s convention: the inverse of the covariance's lower Cholesky factor, transposed); for
    diagonal and spherical ones, ``1 / sqrt(variance)``. A covariance that is not positive definite in float64 (a
    component collapsed onto a point) gives NaN there.
    """
    if covariance in ("diag", "spherical"):
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 / np.sqrt(covariances), 1.0 / covariances
    matrices = covariances[None] if covariance == "tied" else covariances  # tied: one (d, d)
    cholesky = np.full_like(matrices, np.nan)
    for k, matrix in enumerate(matrices):
        with contextlib.suppress(np.linalg.LinAlgError):
            lower = np.linalg.cholesky(matrix)
            cholesky[k] = np.linalg.solve(lower, np.eye(lower.shape[0])).T  # inv(L).T: upper triangular
    precisions = cholesky @ np.swapaxes(cholesky, -1, -2)
    return (cholesky[0], precisions[0]) if covariance == "tied" else (cholesky, precisions)


class MixtureEstimator(ClusterMixin, DensityMixin, BaseEstimator):
    """A mixflow model fitted by one method, as a scikit-learn clusterer and density estimator.

    Parameters
    ----------
    model : MixtureModel, optional
        The declaration, e.g. ``mixflow.GaussianMixture(2, covariance="full")``; by default one Gaussian
        component with a full covariance (``mixflow.GaussianMixture(1)``, as scikit-learn's ``GaussianMixture()``),
        so that ``MixtureEstimator()`` is an estimator as scikit-learn constructs them.
    method : {"em", "map", "mcmc", "advi"}, default "em"
        How to fit (see :func:`mixflow.fit`); predictions come from the same method (the EM/MAP estimate,
        or the mean over NUTS or ADVI draws, see :func:`mixflow.predict_proba`).
    n_components : int, optional
        Overrides the model's number of components (``dataclasses.replace(model, n_components=k)``), so a
        grid search can range over it; the model's own when None.
    random_state : int, numpy RandomState or None, default None
        Seed of the fit and of :meth:`sample`; an int gives the same numbers on every call, None fresh
        ones (as in scikit-learn).
    **fit_options
        Any other option of :func:`mixflow.fit` (``n_init``, ``tol``, ``draws``, ``chains``, ...); they are
        parameters like the others (``get_params``, ``set_params``, ``clone``).

    Attributes
    ----------
    tree_ : xarray.DataTree
        The fitted mixflow container.
    model_ : MixtureModel
        The model fitted (with ``n_components`` applied).
    labels_ : ndarray of shape (n_samples,)
        Hard labels of the training rows.
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        The EM/MAP estimate under scikit-learn's ``GaussianMixture`` names, shapes and conventions
        (``covariances_``: (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical; ``precisions_cholesky_`` the
        upper-triangular factor with ``precision = U @ U.T``, or ``1 / sqrt(variance)``); ``means_`` for the
        families with centres, ``covariances_`` for those with spreads too (grouped data: its variances), the
        precisions for ``GaussianMixture`` only.
    converged_, n_iter_, lower_bound_ : bool, int, float
        EM's convergence, iterations and final log-likelihood per observation (of the EM/MAP estimate;
        per observation as scikit-learn's ``GaussianMixture.lower_bound_``, the total is in ``tree_``).
    lower_bounds_ : list of float
        The winning run's log-likelihood per observation (for ``method="map"`` too) at each recorded iteration,
        as scikit-learn's ``lower_bounds_``; every run's are in ``tree_["em/sample_stats"]``.
    n_features_in_, feature_names_in_
        As in scikit-learn.
    """

    def __init__(self, model=None, method="em", *, n_components=None, random_state=None, **fit_options):
        self.model = model
        self.method = method
        self.n_components = n_components
        self.random_state = random_state
        for name, value in fit_options.items():
            setattr(self, name, value)
        self._fit_option_names = tuple(fit_options)

    def get_params(self, deep=True):
        """The parameters of ``__init__``, the fit options included; with ``deep``, the model's fields as ``model__*``.

        A model is an immutable declaration: :meth:`set_params` replaces it with one whose fields are changed
        (``model__covariance="diag"``), so a grid search can range over them.
        """
        params = super().get_params(deep=deep)
        params.update({name: getattr(self, name) for name in self._fit_option_names})
        if deep and isinstance(self.model, MixtureModel) and dataclasses.is_dataclass(self.model):
            params.update({f"model__{field.name}": getattr(self.model, field.name)
                           for field in dataclasses.fields(self.model) if field.init})
        return params

    def set_params(self, **params):
        """Set parameters as scikit-learn does, and also options of :func:`mixflow.fit` and the model's fields.

        An option not given to ``__init__`` (``n_init``, ``draws``, ...) becomes a fit option, as if it had been;
        ``model__<field>`` replaces the model with one whose field is changed. Other names raise as scikit-learn's.
        """
        own = super().get_params(deep=False).keys() | set(self._fit_option_names)
        fields = {key.split("__", 1)[1]: params.pop(key) for key in [k for k in params if k.startswith("model__")]}
        new = [name for name in params if name not in own and name in _SETTABLE_OPTIONS]
        for name in new:
            setattr(self, name, params.pop(name))
        self._fit_option_names = self._fit_option_names + tuple(new)
        if params:  # a new model first, so that fields set in the same call change it (scikit-learn's order)
            super().set_params(**params)
        if fields:
            if self.model is None:  # the default made explicit to change: one full-covariance Gaussian component
                self.model = GaussianMixture(1)
            if not isinstance(self.model, MixtureModel):
                raise InputTypeError(f"model__{sorted(fields)[0]}: expected a mixflow model to set the field of, "
                                     f"got model={self.model!r}")
            known = {field.name for field in dataclasses.fields(self.model) if field.init}
            unknown = sorted(set(fields) - known)
            if unknown:
                raise InputError(f"model__{unknown[0]}: expected a field of {type(self.model).__name__} "
                                 f"({', '.join(sorted(known))}), got {unknown}")
            self.model = dataclasses.replace(self.model, **fields)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # -- fitting ---------------------------------------------------------------------------------------
    def _checked_model(self) -> MixtureModel:
        for name, instead in _RENAMED.items():  # mixflow.fit's own names, which the estimator takes otherwise
            if name in self._fit_option_names:
                raise InputError(f"{name}: expected {instead}, got the fit option {name}={getattr(self, name)!r}")
        if not (isinstance(self.method, str) and self.method in _FIT_METHODS):  # one method, whatever the model
            raise InputError(f"method: expected one of {list(_FIT_METHODS)}, got {self.method!r}")
        if self.model is None:  # scikit-learn's GaussianMixture() is one full-covariance component
            return GaussianMixture(check_count("n_components", self.n_components, 1, none="one") or 1)
        if not isinstance(self.model, MixtureModel):
            raise InputTypeError(f"model: expected a mixflow model such as GaussianMixture(2), got "
                            f"{type(self.model).__name__}")
        n_components = check_count("n_components", self.n_components, 1, none="the model's own")
        if n_components is None:
            return self.model
        return dataclasses.replace(self.model, n_components=n_components)

    def _seed(self) -> int | None:
        if self.random_state is None:
            return None
        if isinstance(self.random_state, np.random.RandomState):
            return int(self.random_state.randint(np.iinfo(np.int32).max))
        return check_integer("random_state", self.random_state, lambda v: 0 <= v < 2**63,
                             "None, a numpy RandomState or a non-negative integer below 2**63")

    def _frame(self, X, reset: bool) -> pd.DataFrame:
        # at least two rows to fit, as scikit-learn's GaussianMixture; one to predict
        values = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1)
        columns = getattr(self, "feature_names_in_", None)
        return pd.DataFrame(values, columns=None if columns is None else [str(c) for c in columns])

    def fit(self, X, y=None, sample_weight=None):
        """Fit the model to ``X`` (array-like of shape (n_samples, n_features)); ``y`` is ignored.

        ``sample_weight`` are frequency weights (a row of weight w counts as w rows).
        """
        model = self._checked_model()
        frame = self._frame(X, reset=True)
        options = {name: getattr(self, name) for name in self._fit_option_names}
        with _named_as("weights", "sample_weight"), _named_as("data", "X"):
            self.tree_ = fit(model, frame, self.method, random_seed=self._seed(), weights=sample_weight, **options)
        self.model_ = model
        attrs = self.tree_["em"].attrs
        self.converged_ = bool(attrs["converged"])
        self.n_iter_ = int(attrs["n_iter"])
        # per observation, as scikit-learn's GaussianMixture.lower_bound_ (and score) are
        self.lower_bound_ = float(attrs["log_likelihood"]) / float(attrs["n_observations"])
        history = self.tree_["em/sample_stats"]["log_likelihood"].values[int(attrs["best_restart"])]
        self.lower_bounds_ = (history[np.isfinite(history)] / float(attrs["n_observations"])).tolist()
        self.labels_ = predict(self.tree_, frame, self._prediction_method()).values
        estimate = self.tree_["em/estimate"].to_dataset()
        self.weights_ = estimate["weights"].values.copy()
        if "mu" in estimate:  # centres, and spreads where there are (not soft k-means'): scikit-learn's names
            self.means_ = estimate["mu"].values.copy()
            spread = next((name for name in ("covariance", "variance") if name in estimate), None)
            if spread is not None:
                self.covariances_ = estimate[spread].values.copy()
        if isinstance(model, GaussianMixture):  # scikit-learn's shapes and conventions for each covariance type
            self.precisions_cholesky_, self.precisions_ = _precisions(self.covariances_, model.covariance)
        return self

    def _prediction_method(self) -> str:
        return "em" if self.method == "map" else self.method

    def _new(self, X) -> pd.DataFrame:
        check_is_fitted(self, "tree_")
        return self._frame(X, reset=False)

    # -- predictions -----------------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities, shape (n_samples, n_components): see :func:`mixflow.predict_proba`."""
        rows = self._new(X)
        with _named_as("new_data", "X"):
            return predict_proba(self.tree_, rows, self._prediction_method()).values

    def predict(self, X) -> np.ndarray:
        """Most probable component of each row, shape (n_samples,)."""
        rows = self._new(X)
        with _named_as("new_data", "X"):
            return predict(self.tree_, rows, self._prediction_method()).values

    def score_samples(self, X) -> np.ndarray:
        """Log density of each row, shape (n_samples,): see :func:`mixflow.score_samples`."""
        rows = self._new(X)
        with _named_as("new_data", "X"):
            return score_samples(self.tree_, rows, self._prediction_method()).values

    def score(self, X, y=None) -> float:
        """Mean log density per row (higher is better, as ``GridSearchCV`` expects)."""
        return float(self.score_samples(X).mean())

    def bic(self, X) -> float:
        """Bayesian information criterion of the EM/MAP estimate on ``X`` (lower is better)."""
        return self._criterion(X, lambda n: np.log(n))

    def aic(self, X) -> float:
        """Akaike information criterion of the EM/MAP estimate on ``X`` (lower is better)."""
        return self._criterion(X, lambda n: 2.0)

    def _criterion(self, X, penalty) -> float:
        rows = self._new(X)
        with _named_as("new_data", "X"):
            log_likelihood = float(score_samples(self.tree_, rows, "em").values.sum())
        return -2.0 * log_likelihood + penalty(rows.shape[0]) * int(self.tree_["em"].attrs["n_parameters"])

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``n_samples`` new rows and their components: see :func:`mixflow.sample`.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component of each row.
        """
        check_is_fitted(self, "tree_")
        with _named_as("n", "n_samples"):
            rows = sample(self.tree_, n_samples, self._prediction_method(), random_seed=self._seed())
        return rows["x"].values, rows["component"].values
