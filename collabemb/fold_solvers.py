"""The per-ID solves behind the fold-ins of :mod:`collabemb.coldstart` (which re-exports :func:`solve_one`).

* :func:`solve_one`: one new ID of a rating model, Newton on the training objective restricted to
  that ID, the other table fixed (the compiled steps are :mod:`collabemb.engines.newton`'s).
* :func:`als_confidences` / :func:`als_solve`: ALS's closed-form user system with the confidences
  recorded at training, as ``implicit``'s ``recalculate_user`` builds it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from collabemb.fitted import FittedModel
from collabemb.implicit_mf import interaction_weights, kept_mask
from collabemb.registry import UNKNOWN_ROW

MAX_ITER = 50
TOL = 1e-6


def solve_one(
    other_vectors: np.ndarray,
    other_biases: np.ndarray,
    ratings: np.ndarray,
    *,
    weight_decay: float,
    y_range: tuple[float, float],
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    prior: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int, bool]:
    """Minimise ``sum (r - y)^2 + weight_decay * n * |v - prior|^2`` over ``(v, b)`` for one new ID.

    Args:
        other_vectors: (n, k) vectors of the counterparts rated; other_biases: (n,) their biases.
        ratings: (n,) ratings.
        prior: (k,) the vector the penalty pulls towards (svdpp: the user's history vector, so that
            ``v - prior`` is the user's own vector, penalised as in training); None: zeros.

    Returns:
        ``(v, b, iterations, converged)``: (k,) float64 vector, bias, Newton steps taken, and
        whether the gradient fell below ``tol * n``.
    """
    X = np.asarray(other_vectors, dtype=np.float64)
    c = np.asarray(other_biases, dtype=np.float64)
    if prior is not None:  # solve for v - prior: the prior's part of each score is a fixed offset
        prior = np.asarray(prior, dtype=np.float64)
        c = c + X @ prior
    r = np.asarray(ratings, dtype=np.float64)
    n, k = X.shape
    lo, hi = (float(v) for v in y_range)
    span = hi - lo
    A = np.empty((n, k + 1))
    A[:, :k] = X
    A[:, k] = 1.0
    reg = np.full(k + 1, float(weight_decay) * n)
    reg[k] = 0.0  # the bias is not penalised, as in training
    theta = np.zeros(k + 1)
    m = np.clip((r.mean() - lo) / span, 0.02, 0.98)
    theta[k] = np.log(m / (1 - m)) - c.mean()  # start where the mean rating is predicted

    from collabemb.engines.newton import newton  # numba: imported (and its compiled code loaded) on the first fold-in only

    iterations, converged = newton(A, c, r, reg, lo, span, theta, int(max_iter), float(tol))  # theta: solved in place
    v = theta[:k] if prior is None else theta[:k] + prior
    return v, float(theta[k]), int(iterations), bool(converged)


def als_confidences(fitted: FittedModel, values: np.ndarray, codes: np.ndarray, item_rows: np.ndarray, n: int) -> sp.csr_matrix:
    """(n, n_items) CSR of ALS confidences ``alpha * w`` of the kept interactions with known items."""
    identity = fitted.identity
    keep = (item_rows != UNKNOWN_ROW) & kept_mask(values, identity.threshold)
    confidence = interaction_weights(values[keep], identity.weighting or "binary") * float(identity.alpha)
    cui = sp.csr_matrix((confidence, (codes[keep], item_rows[keep] - 1)), shape=(n, len(fitted.items)))
    cui.sum_duplicates()
    return cui


def als_solve(item_f: np.ndarray, cui: sp.csr_matrix, regularization: float) -> np.ndarray:
    """(n_users, k) float64 exact ALS user factors for confidences ``cui`` (positive entries).

    ``A_u = Y^T Y + reg * I + sum_i (c_ui - 1) y_i y_i^T`` and ``b_u = sum_i c_ui y_i``, the
    same system ``implicit`` builds in ``recalculate_user``.
    """
    k = item_f.shape[1]
    base = item_f.T @ item_f + regularization * np.eye(k)
    out = np.empty((cui.shape[0], k))
    for u in range(cui.shape[0]):
        cols = cui.indices[cui.indptr[u] : cui.indptr[u + 1]]
        c = cui.data[cui.indptr[u] : cui.indptr[u + 1]]
        y = item_f[cols]
        a = base + (y.T * (c - 1.0)) @ y
        out[u] = np.linalg.solve(a, y.T @ c)
    return out


__all__ = ["MAX_ITER", "TOL", "als_confidences", "als_solve", "solve_one"]
