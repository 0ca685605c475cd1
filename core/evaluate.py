"""Test-set evaluation from predicted probabilities: plain numpy, so it is testable alone."""

from __future__ import annotations

import numpy as np

# Review-length buckets (words) for "accuracy by length"; the last one is what maxlen cuts.
LENGTH_EDGES = (0, 100, 200, 300, 500, 10**9)
ROC_POINTS = 201  # points kept of the ROC curve (enough for a smooth chart)
_EPS = 1e-7  # Keras's epsilon: probabilities are clipped to [eps, 1 - eps] in the loss


def binary_crossentropy(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0,0) to (1,1)."""
    order = np.argsort(-p, kind="mergesort")
    y_sorted, p_sorted = y[order], p[order]
    distinct = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(y.sum(), 1), max(len(y) - y.sum(), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _thin(fpr: np.ndarray, tpr: np.ndarray, n: int) -> tuple[list[float], list[float]]:
    if len(fpr) <= n:
        return fpr.tolist(), tpr.tolist()
    idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, n).astype(int), len(fpr) - 1])
    return fpr[idx].tolist(), tpr[idx].tolist()


def evaluate(y: np.ndarray, p: np.ndarray, lengths: np.ndarray, maxlen: int) -> dict:
    """Accuracy, loss, confusion matrix, ROC (thinned) + AUC, accuracy by review length."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    pred = (p >= 0.5).astype(np.float64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    fpr, tpr = roc_curve(y, p)
    roc_fpr, roc_tpr = _thin(fpr, tpr, ROC_POINTS)
    buckets = []
    for lo, hi in zip(LENGTH_EDGES[:-1], LENGTH_EDGES[1:]):
        mask = (lengths >= lo) & (lengths < hi)
        label = f"{lo}–{hi - 1}" if hi < 10**9 else f"{lo}+"
        buckets.append({"bucket": label, "reviews": int(mask.sum()),
                        "accuracy": float((pred[mask] == y[mask]).mean()) if mask.any() else None,
                        "truncated": bool(lo >= maxlen)})
    return {
        "test_accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "test_loss": binary_crossentropy(y, p) if len(y) else 0.0,
        "test_reviews": int(len(y)),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "roc": {"fpr": roc_fpr, "tpr": roc_tpr},
        "auc": auc(fpr, tpr),
        "by_length": buckets,
    }
