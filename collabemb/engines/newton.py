"""Newton's method for one new ID's vector and bias on the rating objective, compiled with numba.

The fold-in of :func:`collabemb.coldstart.solve_one` minimises, over ``theta = (v, b)`` of one
new user (or item) with ``n`` ratings ``r`` of counterparts with rows ``A[:, :k]`` (``A[:, k] = 1``)
and biases ``c``::

    f(theta) = sum_i (lo + span * sigmoid(A_i . theta + c_i) - r_i)^2 + sum_j reg_j * theta_j^2

by Newton steps (Cholesky of the exact Hessian; where it is not positive definite, the Gauss-Newton
Hessian, which always is) with a backtracking (Armijo) line search. Written out in loops: at the
sizes of a fold-in (k ~ 64, n ~ 10..1000) numpy's per-call overhead, not the arithmetic, was the
cost (about 1 ms per ID in numpy, tens of microseconds here). No fastmath: IEEE arithmetic, so the
result does not depend on how LLVM reorders sums.
"""

from __future__ import annotations

import math

import numpy as np

from collabemb.engines import compiled as _jit  # IEEE arithmetic: no fastmath


@_jit
def _objective(A, c, r, reg, lo, span, theta):
    n, m = A.shape
    total = 0.0
    for i in range(n):
        z = c[i]
        for j in range(m):
            z += A[i, j] * theta[j]
        d = lo + span / (1.0 + math.exp(-z)) - r[i]
        total += d * d
    for j in range(m):
        total += reg[j] * theta[j] * theta[j]
    return total


@_jit
def _cholesky_solve(H, g, step):
    """Solve ``H step = g`` by Cholesky (LAPACK); False when ``H`` is not positive definite."""
    try:
        L = np.linalg.cholesky(H)
    except Exception:  # numba's LinAlgError: not positive definite
        return False
    m = H.shape[0]
    for i in range(m):  # L y = g
        s = g[i]
        for p in range(i):
            s -= L[i, p] * step[p]
        step[i] = s / L[i, i]
    for i in range(m - 1, -1, -1):  # L^T x = y
        s = step[i]
        for p in range(i + 1, m):
            s -= L[p, i] * step[p]
        step[i] = s / L[i, i]
    return True


@_jit
def _hessian(A, weights, reg, extra, H):
    """``H = A^T diag(weights) A + diag(2 reg + extra)`` (weights already include the factor 2)."""
    n, m = A.shape
    for a in range(m):
        for b in range(a + 1):
            s = 0.0
            for i in range(n):
                s += A[i, a] * weights[i] * A[i, b]
            H[a, b] = s
            H[b, a] = s
        H[a, a] += 2.0 * reg[a] + extra


@_jit
def newton(A, c, r, reg, lo, span, theta, max_iter, tol):
    """Minimise ``f`` from ``theta`` (changed in place); returns ``(iterations, converged)``.

    ``A``: (n, m) float64 with the ones column last; ``c``, ``r``: (n,); ``reg``: (m,); ``theta``: (m,).
    Converged: the largest gradient entry fell to ``tol * n`` or below, or no step along the
    Newton direction lowers ``f`` any more (a minimum to float precision).
    """
    n, m = A.shape
    s = np.empty(n)
    e = np.empty(n)
    dy = np.empty(n)
    weights = np.empty(n)
    g = np.empty(m)
    H = np.empty((m, m))
    step = np.empty(m)
    candidate = np.empty(m)
    f0 = _objective(A, c, r, reg, lo, span, theta)
    for it in range(max_iter):
        for i in range(n):
            z = c[i]
            for j in range(m):
                z += A[i, j] * theta[j]
            s[i] = 1.0 / (1.0 + math.exp(-z))
            e[i] = lo + span * s[i] - r[i]
            dy[i] = span * s[i] * (1.0 - s[i])
        largest = 0.0
        for j in range(m):
            acc = 0.0
            for i in range(n):
                acc += A[i, j] * (e[i] * dy[i])
            g[j] = 2.0 * acc + 2.0 * reg[j] * theta[j]
            largest = max(largest, abs(g[j]))
        if largest <= tol * n:
            return it, True
        for i in range(n):
            weights[i] = 2.0 * (dy[i] * dy[i] + e[i] * dy[i] * (1.0 - 2.0 * s[i]))
        _hessian(A, weights, reg, 0.0, H)
        if not _cholesky_solve(H, g, step):  # not convex here: Gauss-Newton, always a descent direction
            for i in range(n):
                weights[i] = 2.0 * dy[i] * dy[i]
            _hessian(A, weights, reg, 1e-9, H)
            _cholesky_solve(H, g, step)
        slope = 0.0
        for j in range(m):
            slope += g[j] * step[j]
        t = 1.0
        while True:
            for j in range(m):
                candidate[j] = theta[j] - t * step[j]
            f1 = _objective(A, c, r, reg, lo, span, candidate)
            if f1 <= f0 - 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10:
            return it, True
        theta[:] = candidate
        f0 = f1
    return max_iter, False
