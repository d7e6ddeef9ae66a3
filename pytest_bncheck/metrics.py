"""Which way a metric is better, and when two values of it agree.

Two values agree when ``|value - fit| <= atol + rtol * |fit|`` (numpy.isclose's rule, with the
fit-time value as the reference).  For metrics whose direction is known, a value that is
*better* than the fit-time one always agrees: inference is expected to beat the fit-time
running mean when dropout is off or the weights kept improving during the last epoch.  For
unknown metrics the comparison is two-sided.  NaN never agrees.

Defaults (``atol=0.05``, ``rtol=0.1``), and why: fit-time numbers are running means over the
last epoch while the weights moved, and training mode uses noisy per-batch statistics, so a
healthy model's inference numbers differ from them by a few hundredths in accuracy and by up to
roughly ten percent in loss; the failures this check exists for are gross (accuracy 1.0 vs
0.33, loss 1e-7 vs 41 on the seed).  ``atol`` also covers losses near zero, where a relative
tolerance alone would flag noise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pytest_bncheck import arguments
from pytest_bncheck.errors import BNCheckInputError

DEFAULT_ATOL = 0.05
DEFAULT_RTOL = 0.1

LOWER_IS_BETTER = "lower"
HIGHER_IS_BETTER = "higher"

# Suffixes of history keys (multi-output models prefix them with the output name).
_LOWER = re.compile(
    r"(^|_)(loss|error|crossentropy|mse|mae|mape|msle|rmse|hinge|divergence|kld|poisson|"
    r"log_cosh|logcosh|false_positives|false_negatives)$"
)
_HIGHER = re.compile(
    r"(^|_)(acc|accuracy|auc|precision|recall|f1_score|fbeta_score|iou|r2_score|"
    r"cosine_similarity|true_positives|true_negatives|sensitivity|specificity)"
    r"(_at_\w+)?(_\d+)?$"
)


# Keras's built-in metric classes, by which way they improve (looked up by name: a class a
# Keras version lacks is skipped).
_HIGHER_CLASSES = (
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy", "AUC", "Precision", "Recall", "PrecisionAtRecall", "RecallAtPrecision",
    "SensitivityAtSpecificity", "SpecificityAtSensitivity", "IoU", "MeanIoU", "BinaryIoU", "OneHotIoU",
    "OneHotMeanIoU", "F1Score", "FBetaScore", "R2Score", "CosineSimilarity", "TruePositives", "TrueNegatives",
    "PearsonCorrelation", "ConcordanceCorrelation",
)
_LOWER_CLASSES = (
    "MeanSquaredError", "RootMeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "LogCoshError", "BinaryCrossentropy", "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy", "KLDivergence", "Poisson", "Hinge", "SquaredHinge", "CategoricalHinge",
    "FalsePositives", "FalseNegatives",
)


def direction_of(metric: object, metrics_module: object) -> str | None:
    """The direction of a Keras metric object: from its class, else from its name (or, for a
    wrapped function such as ``metrics=["mse"]``, the function's name)."""
    for names, way in ((_HIGHER_CLASSES, HIGHER_IS_BETTER), (_LOWER_CLASSES, LOWER_IS_BETTER)):
        classes = tuple(c for c in (getattr(metrics_module, n, None) for n in names) if isinstance(c, type))
        if classes and isinstance(metric, classes):
            return way
    function = getattr(metric, "_fn", None)
    return direction(getattr(metric, "name", "")) or direction(getattr(function, "__name__", "") or "")


def direction(name: str) -> str | None:
    """``"lower"``, ``"higher"`` or ``None`` (unknown: compare both ways), from a history key."""
    key = name.lower()
    if _LOWER.search(key):
        return LOWER_IS_BETTER
    if _HIGHER.search(key):
        return HIGHER_IS_BETTER
    return None


@dataclass(frozen=True)
class Tolerance:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    def allowed(self, reference: float) -> float:
        return self.atol + self.rtol * abs(reference)


_BY_NAME = object()


def agrees(value: float, fit: float, name: str, tolerance: Tolerance, way: object = _BY_NAME) -> bool:
    """Whether ``value`` agrees with the reference ``fit`` (better counts as agreeing);
    ``way`` is the metric's direction (default: from its name)."""
    if math.isnan(value) or math.isnan(fit):
        return False
    allowed = tolerance.allowed(fit)
    way = direction(name) if way is _BY_NAME else way
    if way == LOWER_IS_BETTER:
        return value <= fit + allowed
    if way == HIGHER_IS_BETTER:
        return value >= fit - allowed
    return abs(value - fit) <= allowed


def resolve(*sources: dict | None) -> Tolerance:
    """First value given wins, per field: pass sources from highest precedence down
    (call > marker > command line > ini); missing fields fall back to the defaults."""
    values = {"atol": None, "rtol": None}
    for source in sources:
        if not source:
            continue
        for key in values:
            if values[key] is None and source.get(key) is not None:
                values[key] = arguments.tolerance(key, source[key])
    return Tolerance(
        DEFAULT_ATOL if values["atol"] is None else values["atol"],
        DEFAULT_RTOL if values["rtol"] is None else values["rtol"],
    )


def refuse_diverged(fit: dict[str, float], when: str = "") -> None:
    """Refuse fit-time numbers that are NaN: training diverged, so no comparison means anything.

    ``when`` says where the numbers came from (e.g. " in the last epoch").
    """
    diverged = sorted(name for name, value in fit.items() if math.isnan(value))
    if diverged:
        raise BNCheckInputError(
            f"fit-time {', '.join(diverged)} is NaN{when}: training diverged; fix the training "
            "(learning rate, data) before checking BatchNormalization consistency"
        )
