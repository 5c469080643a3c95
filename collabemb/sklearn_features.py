"""A scikit-learn transformer: collaborative-filtering features for ``Pipeline`` and ``ColumnTransformer``.

:class:`EmbeddingFeatures` turns a user ID column and an item ID column into the columns of
:func:`collabemb.features.to_features` (user embedding, user bias, user known flag, then the
item's), learned from the target ``y`` (the ratings) with :func:`collabemb.fit`::

    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline

    features = ColumnTransformer([("cf", EmbeddingFeatures(settings={"n_factors": 16}), ["user", "item"])], remainder="passthrough")
    model = make_pipeline(features, HistGradientBoostingRegressor()).fit(X_train, y_train)
    model.predict(X_test)

**Cross-fitting.** The features are learned from the very target the downstream model is then
trained on, so the features of a training row computed by a model that saw that row's rating
carry its target (a user rated once gets an embedding and bias that encode that one rating), and
the downstream model learns to trust them more than they deserve on new rows. ``fit_transform``
therefore works as scikit-learn's ``TargetEncoder`` does: it splits the rows into ``cv`` folds
(``KFold``, shuffled with ``random_state``), and each fold's rows get their features from a model
fitted on the *other* folds only; it then fits one model on all rows (``fitted_``), which
``transform`` uses for every later call (validation, test and production rows). ``Pipeline`` and
``ColumnTransformer`` call ``fit_transform`` when they are fitted, so they get the cross-fitted
features. ``fit(X, y).transform(X)`` is the *leaky* version: every row's features come from the
model that saw its rating; ``fit_transform(X, y)`` does not equal it, by design.

**Aligned coordinates.** A factor model is only determined up to a rotation of its factor space
(turning every user and item vector by the same orthogonal matrix changes no prediction), so the
``emb_j`` columns of two separately fitted models do not mean the same thing. ``fit_transform``
fits the full model first and turns each fold model's vectors onto it (orthogonal Procrustes
over the IDs both know; :func:`_rotation_onto`), so the training rows' features and the features
``transform`` later gives share one coordinate system, as the downstream model assumes. The
rotation is ``k x k`` numbers fitted to all the IDs' vectors at once, not anything of one row.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import pandas as pd

try:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.model_selection import KFold
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # scikit-learn is an optional dependency: the "sklearn" extra
    raise ImportError(f"collabemb.EmbeddingFeatures needs scikit-learn: pip install 'collabemb[sklearn]' ({exc})") from exc

from collabemb.features import to_features
from collabemb.fitted import FittedModel
from collabemb.settings import MAX_SEED, FitSettings
from collabemb.train import fit as fit_ratings

#: Column names of the ID frame handed to ``to_features`` (the feature names follow its prefixes).
_USER, _ITEM = "user", "item"


class EmbeddingFeatures(TransformerMixin, BaseEstimator):
    """Learn user and item embeddings from ``(user, item) -> y`` and hand them out as features.

    Parameters
    ----------
    user_col, item_col : str
        The ID columns of ``X`` (a DataFrame; other columns are ignored). IDs are ints or strings,
        as everywhere in collabemb (``"7"`` is not ``7``).
    cv : int, default=5
        Folds of the cross-fitting in :meth:`fit_transform` (an int >= 2).
    bias, known : bool, default=True
        Whether to add each side's bias column and its known flag (1.0 for an ID the model was
        fitted on, 0.0 for one it never saw, which gets the trained unknown slot, row 0).
    random_state : int or None, default=0
        Seeds the fold shuffling and every fit (``FitSettings.seed``). ``None`` draws a seed
        from numpy's global generator at each fit.
    settings : dict or None, default=None
        :class:`~collabemb.settings.FitSettings` fields for :func:`collabemb.fit`, e.g.
        ``{"n_factors": 16, "epochs": 10, "threads": 1}``; None uses collabemb's defaults. The
        progress bar is off unless ``"progress"`` is given; the seed is ``random_state``.

    Attributes
    ----------
    fitted_ : FittedModel
        The model fitted on all the rows given to :meth:`fit` / :meth:`fit_transform`.
    n_features_in_ : int
        The number of columns of ``X`` at fit.
    feature_names_in_ : ndarray of str
        ``X``'s column names at fit, when they are all strings.

    A (user, item) pair given more than once is fitted with its last row's ``y``, as
    :func:`collabemb.read_ratings` does by default.

    Notes
    -----
    :meth:`fit_transform` is cross-fitted (see the module docstring): its output is *not*
    ``fit(X, y).transform(X)``, which is the leaky version, whose rows carry their own target.
    The output is a float64 array: ``user_emb_0 .. user_emb_{k-1}``, ``user_bias``,
    ``user_known``, then the same for ``item_`` (:meth:`get_feature_names_out`);
    ``set_output(transform="pandas")`` gives it as a DataFrame with ``X``'s index.
    """

    def __init__(
        self,
        user_col: str = "user",
        item_col: str = "item",
        cv: int = 5,
        bias: bool = True,
        known: bool = True,
        random_state: int | None = 0,
        settings: Mapping | None = None,
    ) -> None:
        self.user_col = user_col
        self.item_col = item_col
        self.cv = cv
        self.bias = bias
        self.known = known
        self.random_state = random_state
        self.settings = settings

    # --- scikit-learn API ----------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y=None) -> EmbeddingFeatures:
        """Fit one model on all rows (``fitted_``); no cross-fitting (see :meth:`fit_transform`)."""
        ids, target = self._check_fit_input(X, y)
        settings = self._fit_settings()
        self._check_cv(None)  # not used here, but a bad cv is refused whichever fit method comes first
        self._fit_full(X, ids, target, settings, self._seed())
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The features of ``X``'s rows from ``fitted_``: an ``(n, n_features_out)`` float64 array.

        IDs ``fitted_`` never saw get the unknown slot (row 0) and a known flag of 0.
        """
        check_is_fitted(self, "fitted_")
        return self._features(self.fitted_, self._ids(X))

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params) -> np.ndarray:
        """Cross-fitted features of the training rows, then :meth:`fit` on all of them.

        Row ``i``'s features come from a model fitted on the ``cv - 1`` folds that do not hold
        row ``i``, so no row's features have seen its own target; a user (or item) whose rows all
        fall in one fold is unknown (row 0, known flag 0) to the model that encodes them. The
        full model ``fitted_`` (for :meth:`transform`) is fitted first, and each fold model's
        embeddings are rotated onto its coordinates (predictions unchanged; see the module
        docstring). This is not equal to ``fit(X, y).transform(X)`` (the leaky version), by design.
        """
        if fit_params:
            raise TypeError(f"EmbeddingFeatures.fit_transform takes no fit parameters, got {', '.join(sorted(fit_params))}")
        ids, target = self._check_fit_input(X, y)
        settings = self._fit_settings()
        cv = self._check_cv(len(target))
        seed = self._seed()
        self._fit_full(X, ids, target, settings, seed)
        out = np.empty((len(target), len(self._feature_names_out)), dtype=np.float64)
        for train_rows, fold_rows in KFold(n_splits=cv, shuffle=True, random_state=seed % 2**32).split(target):
            model = self._fit_model(ids.iloc[train_rows], target[train_rows], settings, seed)
            out[fold_rows] = self._features(model, ids.iloc[fold_rows], rotation=_rotation_onto(model, self.fitted_))
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The output column names: ``user_emb_0 ..``, ``user_bias``, ``user_known``, then ``item_``."""
        check_is_fitted(self, "fitted_")
        if input_features is not None:
            given = list(map(str, input_features))
            expected = list(self.feature_names_in_) if hasattr(self, "feature_names_in_") else None
            if (expected is not None and given != expected) or len(given) != self.n_features_in_:
                raise ValueError(f"input_features {given} are not the columns seen at fit ({expected or self.n_features_in_})")
        return self._feature_names_out.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    # --- helpers -------------------------------------------------------------------------------

    def _fit_full(self, X: pd.DataFrame, ids: pd.DataFrame, target: np.ndarray, settings: FitSettings, seed: int) -> None:
        """Fit the full model and set the fitted attributes."""
        self.fitted_ = self._fit_model(ids, target, settings, seed)
        self.n_features_in_ = X.shape[1]
        names = np.asarray(X.columns, dtype=object)
        if all(isinstance(name, str) for name in names):
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._feature_names_out = np.asarray(self._frame(self.fitted_, ids.iloc[:0]).columns, dtype=object)

    def _fit_model(self, ids: pd.DataFrame, target: np.ndarray, settings: FitSettings, seed: int) -> FittedModel:
        """:func:`collabemb.fit` on these rows; the ratings frame keeps ``X``'s column names for its error messages."""
        rating = next(name for name in ("rating", "y", "target") if name not in (self.user_col, self.item_col))
        frame = pd.DataFrame({self.user_col: ids[_USER].to_numpy(), self.item_col: ids[_ITEM].to_numpy(), rating: target})
        return fit_ratings(frame, settings=settings, seed=seed, user_col=self.user_col, item_col=self.item_col, rating_col=rating)

    def _frame(self, model: FittedModel, ids: pd.DataFrame) -> pd.DataFrame:
        """The feature columns of ``to_features`` alone, for an ID frame with columns user, item."""
        frame = to_features(model, ids, user_col=_USER, item_col=_ITEM, bias=self.bias, known=self.known)
        return frame.iloc[:, 2:]

    def _features(self, model: FittedModel, ids: pd.DataFrame, *, rotation: np.ndarray | None = None) -> np.ndarray:
        """The feature columns as a float64 array; ``rotation`` (k, k) turns both sides' embedding columns."""
        out = self._frame(model, ids).to_numpy(dtype=np.float64)
        if rotation is not None:
            k = rotation.shape[0]
            side = k + int(bool(self.bias)) + int(bool(self.known))  # one side's columns: emb, [bias], [known]
            for start in (0, side):
                out[:, start : start + k] = out[:, start : start + k] @ rotation
        return out

    def _ids(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X``'s two ID columns as a fresh frame with columns user, item (and a plain range index)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"EmbeddingFeatures needs X as a pandas DataFrame with ID columns {self.user_col!r} and "
                f"{self.item_col!r}, got {type(X).__name__} (in a ColumnTransformer, select the columns by name: "
                f"[{self.user_col!r}, {self.item_col!r}])"
            )
        missing = [c for c in (self.user_col, self.item_col) if c not in X.columns]
        if missing:
            found = ", ".join(map(repr, X.columns))
            raise ValueError(f"X has no ID column(s) {', '.join(map(repr, missing))} (user_col / item_col); found: {found}")
        return pd.DataFrame({_USER: X[self.user_col].to_numpy(), _ITEM: X[self.item_col].to_numpy()})

    def _check_fit_input(self, X: pd.DataFrame, y) -> tuple[pd.DataFrame, np.ndarray]:
        """The ID frame and the target as a float64 vector, or a ValueError saying what is wrong."""
        if self.user_col == self.item_col:
            raise ValueError(f"user_col and item_col are the same column {self.user_col!r}")
        ids = self._ids(X)
        if y is None:
            raise ValueError("EmbeddingFeatures needs the target y (the ratings) to fit: fit(X, y)")
        try:
            target = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("y must be numbers (the ratings), got values that are not") from None
        if target.ndim == 2 and target.shape[1] == 1:
            target = target[:, 0]
        if target.ndim != 1:
            raise ValueError(f"y must be one column of ratings, got shape {target.shape}")
        if len(target) != len(ids):
            raise ValueError(f"X has {len(ids)} rows but y has {len(target)} values")
        if len(target) == 0:
            raise ValueError("X and y are empty: nothing to fit")
        bad = np.flatnonzero(~np.isfinite(target))
        if len(bad):
            what = "NaN" if np.isnan(target[bad[0]]) else "infinite"
            raise ValueError(f"y has {len(bad)} missing or infinite value(s), first at position {bad[0]} ({what}); ratings must be finite")
        return ids, target

    def _fit_settings(self) -> FitSettings:
        given = {} if self.settings is None else self.settings
        if not isinstance(given, Mapping):
            raise TypeError(f"settings must be a dict of FitSettings fields or None, got {type(given).__name__}")
        unknown = sorted(set(map(str, given)) - set(FitSettings.names()))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; FitSettings fields are {', '.join(FitSettings.names())}")
        if "seed" in given:
            raise ValueError("give the seed as random_state=, not in settings")
        return FitSettings().replace(**{"progress": False, **given})

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.randint(0, 2**31 - 1))
        if not isinstance(rs, numbers.Integral) or isinstance(rs, bool) or not 0 <= rs <= MAX_SEED:
            raise ValueError(f"random_state must be an int in 0..{MAX_SEED} or None, got {rs!r}")
        return int(rs)

    def _check_cv(self, n_rows: int | None) -> int:
        cv = self.cv
        if not isinstance(cv, numbers.Integral) or isinstance(cv, bool) or cv < 2:
            raise ValueError(f"cv must be an int >= 2 (the number of folds), got {cv!r}")
        if n_rows is not None and cv > n_rows:
            raise ValueError(f"cv={cv} folds need at least {cv} rows, got {n_rows}")
        return int(cv)


def _rotation_onto(model: FittedModel, reference: FittedModel) -> np.ndarray:
    """The (k, k) orthogonal matrix that best turns ``model``'s embeddings onto ``reference``'s.

    Orthogonal Procrustes over every user and item ``model`` knows (all of them are known to the
    reference, fitted on a superset of the rows): ``R = U V^T`` for ``F^T G = U S V^T``, ``F`` the
    stacked user and item vectors of ``model``, ``G`` the reference's of the same IDs. Turning the
    user and the item vectors by the same ``R`` leaves every dot product, so every prediction of
    ``model``, unchanged; it only expresses ``model``'s factors in the reference's coordinates.
    """
    ours, theirs = [], []
    for table in ("user", "item"):
        registry = model.registry(table)
        rows = np.arange(1, registry.n_rows)
        ours.append(model.tables(table)[0][rows])
        theirs.append(reference.tables(table)[0][reference.registry(table).encode(registry.decode(rows))])
    cross = np.concatenate(ours).astype(np.float64).T @ np.concatenate(theirs).astype(np.float64)
    u, _, vt = np.linalg.svd(cross)
    return u @ vt
