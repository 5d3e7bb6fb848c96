"""A Gaussian with a probabilistic-PCA covariance: the guard's learned density.

The squared Mahalanobis distance to it (divided by the dimension and by its
median over the fit set, so a typical fit image scores about 1) is the
out-of-distribution score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PPCAGaussian:
    """A Gaussian with probabilistic-PCA covariance (Tipping & Bishop 1999).

    ``components`` (k, D) and ``eigvals`` (k,) are the top eigenpairs of a
    Ledoit-Wolf shrunk covariance; every other direction has variance
    ``tail``. :meth:`score` is the squared Mahalanobis distance divided by D,
    further divided by ``scale`` (the median over the fit set), so a typical
    fit-set sample scores about 1.
    """

    mean: np.ndarray
    components: np.ndarray
    eigvals: np.ndarray
    tail: float
    scale: float = 1.0

    @classmethod
    def fit(cls, X: np.ndarray, k: int = 64) -> "PPCAGaussian":
        from sklearn.covariance import LedoitWolf

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"need at least 2 samples of shape (N, D), got {X.shape}")
        mean = X.mean(0)
        cov = LedoitWolf(assume_centered=True).fit(X - mean).covariance_
        w, V = np.linalg.eigh(cov)
        w, V = w[::-1], V[:, ::-1]
        k = int(max(1, min(k, X.shape[1] - 1)))
        floor = max(float(w[0]) * 1e-9, 1e-12)
        tail = float(max(w[k:].mean(), floor)) if X.shape[1] > k else floor
        g = cls(mean=mean.astype(np.float32), components=V[:, :k].T.astype(np.float32),
                eigvals=np.maximum(w[:k], floor).astype(np.float32), tail=tail)
        g.scale = float(np.median(g.score(X))) or 1.0
        return g

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64) - self.mean
        if Z.ndim == 1:
            Z = Z[None]
        P = Z @ self.components.T.astype(np.float64)
        inside = (P ** 2 / self.eigvals).sum(1)
        outside = np.maximum((Z ** 2).sum(1) - (P ** 2).sum(1), 0.0) / self.tail
        return (inside + outside) / Z.shape[1] / self.scale

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.components": self.components,
                f"{prefix}.eigvals": self.eigvals,
                f"{prefix}.tail_scale": np.array([self.tail, self.scale], dtype=np.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "PPCAGaussian":
        tail, scale = (float(v) for v in tensors[f"{prefix}.tail_scale"])
        return cls(mean=tensors[f"{prefix}.mean"], components=tensors[f"{prefix}.components"],
                   eigvals=tensors[f"{prefix}.eigvals"], tail=tail, scale=scale)
