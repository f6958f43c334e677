"""Per-class figures of a test run, all derived from one confusion matrix (rows: true class, columns:
predicted), so the JSON report, the loggers and the W&B plot agree and nothing is counted twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets all ones (scikit-learn's `balanced`):
    `n / (k · count_c)`. A class with no training image gets weight 0 (it never appears in the loss)."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.float32)
    weights = counts_t.sum() / (len(counts_t) * counts_t.clamp(min=1))
    return torch.where(counts_t > 0, weights, torch.zeros_like(weights))


def class_report(confusion: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy/recall, precision, F1 and support per class, macro-F1 and balanced accuracy (both over the
    classes present in the split), and the matrix itself as nested lists."""
    cm = confusion.detach().cpu().to(torch.float64)
    support, predicted, hits = cm.sum(1), cm.sum(0), cm.diag()
    recall = hits / support.clamp(min=1)
    precision = hits / predicted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = support > 0
    names = list(class_names) if len(class_names) == len(cm) else [str(i) for i in range(len(cm))]
    return {
        "class_names": names,
        "per_class": {
            name: {
                "accuracy": float(recall[i]),  # the share of this class's images classified right = recall
                "precision": float(precision[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "confusion_matrix": cm.to(torch.int64).tolist(),
    }
