"""How a harmful/harmless classifier did, with Wilson intervals: per prompt set, and per pair of a
harmful and a harmless set. Shared by ``refusalkit harmfulness`` and ``guard evaluate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refusalkit.evaluation.metrics import wilson_interval


def set_accuracy(flags: Sequence[bool], label_harmful: bool) -> dict[str, Any]:
    """Accuracy on one set whose prompts are all of one class (``flags``: flagged harmful)."""
    n, flagged = len(flags), sum(flags)
    correct = flagged if label_harmful else n - flagged
    low, high = wilson_interval(correct, n)
    return {
        "label": "harmful" if label_harmful else "harmless",
        "accuracy": correct / n if n else float("nan"),
        "n": n,
        "flagged_harmful": flagged,
        "ci95": [low, high],
    }


def precision_recall(harmful: Sequence[bool], harmless: Sequence[bool]) -> dict[str, Any]:
    """Precision, recall (each with its interval) and balanced accuracy of "flagged harmful"."""
    true_positive, false_positive = sum(harmful), sum(harmless)
    flagged = true_positive + false_positive
    recall = true_positive / len(harmful) if harmful else float("nan")
    specificity = (len(harmless) - false_positive) / len(harmless) if harmless else float("nan")
    return {
        "precision": true_positive / flagged if flagged else float("nan"),
        "precision_ci95": list(wilson_interval(true_positive, flagged)),
        "recall": recall,
        "recall_ci95": list(wilson_interval(true_positive, len(harmful))),
        "balanced_accuracy": (recall + specificity) / 2,
    }
