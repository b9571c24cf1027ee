"""The learners behind each model type, with the settings that make them reproducible and
make their ONNX copies compute what they compute (pure: arrays in, fitted models out).

Every learner's ``predict`` returns the same layout as its ONNX graph's output tensor:
(n, n_classes) probabilities for classifiers, (n, 1) values for regressors. Reproducible:
fixed seeds, one thread, LightGBM's deterministic mode. ONNX-exact: tree thresholds are
rounded down to float32 after fitting (see ``round_down_to_float32``) and the logistic
base learner centres features on float32 means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from orchestrator.models.training.walk_forward import time_holdout

if TYPE_CHECKING:  # imported lazily at runtime
    from lightgbm import LGBMClassifier, LGBMRegressor

SEED = 20260321
TASKS = {
    "direction": "binary",
    "swing": "multiclass",
    "volatility": "regression",
    "return": "regression",
}
N_CLASSES = {"direction": 2, "swing": 3}

_LGBM_COMMON = dict(
    subsample=0.8,
    subsample_freq=1,
    colsample_bytree=0.8,
    reg_lambda=1.0,
    random_state=SEED,
    deterministic=True,
    force_row_wise=True,
    n_jobs=1,
    verbose=-1,
)
LGBM_PARAMS = {
    "direction": dict(n_estimators=120, num_leaves=15, learning_rate=0.05, min_child_samples=400),
    # Three trees a round (one per class): fewer rounds keep the file and the time small.
    "swing": dict(n_estimators=80, num_leaves=15, learning_rate=0.05, min_child_samples=400),
    "volatility": dict(n_estimators=150, num_leaves=15, learning_rate=0.05, min_child_samples=400),
    # Next-candle returns are mostly noise: small trees, many rows per leaf, slow learning.
    "return": dict(n_estimators=100, num_leaves=7, learning_rate=0.03, min_child_samples=1000),
}


def round_down_to_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each value (as float64).

    ONNX tree ensembles hold thresholds as float32. For any float32 input x, ``x <= t``
    holds exactly when ``x <= round_down_to_float32(t)``, so this rounding changes no
    decision of the native model on float32 inputs and makes the ONNX copy take the same
    decisions: both then agree to float32 summation error, not to split flips.
    """
    exact = np.asarray(values, dtype=np.float64)
    down = exact.astype(np.float32)
    down = np.where(down.astype(np.float64) > exact, np.nextafter(down, np.float32(-np.inf)), down)
    return down.astype(np.float64)


def float32_exact_lightgbm(model) -> None:
    """Round every split threshold of a fitted LightGBM sklearn model, in place."""
    import lightgbm

    lines = model.booster_.model_to_string().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            exact = np.array(line.removeprefix("threshold=").split(), dtype=np.float64)
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in round_down_to_float32(exact))
    # tree_sizes holds byte offsets of the old text; without it LightGBM parses sequentially.
    lines = [line for line in lines if not line.startswith("tree_sizes=")]
    model._Booster = lightgbm.Booster(model_str="\n".join(lines) + "\n")


def float32_exact_forest(forest) -> None:
    """Round every split threshold of a fitted scikit-learn forest, in place."""
    for estimator in forest.estimators_:
        state = estimator.tree_.__getstate__()
        nodes = state["nodes"].copy()
        nodes["threshold"] = round_down_to_float32(nodes["threshold"])
        state["nodes"] = nodes
        estimator.tree_.__setstate__(state)


class GradientBoosted:
    """One LightGBM model for one model type (classifier or regressor)."""

    def __init__(self, model_type: str, **overrides):
        self.model_type = model_type
        self.params = {**LGBM_PARAMS[model_type], **_LGBM_COMMON, **overrides}
        self.model: LGBMRegressor | LGBMClassifier | None = None  # set by fit()

    def fit(
        self, x: np.ndarray, y: np.ndarray, open_time=None, purge_ms: int = 0
    ) -> GradientBoosted:
        """Fit on every row (``open_time`` and ``purge_ms`` are for the stacked learner)."""
        from lightgbm import LGBMClassifier, LGBMRegressor

        if TASKS[self.model_type] == "regression":
            self.model = LGBMRegressor(**self.params).fit(x, y)
        else:
            self.model = LGBMClassifier(**self.params).fit(x, y.astype(np.int64))
        float32_exact_lightgbm(self.model)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.model is not None, "fit() before predict()"
        x = np.asarray(x, dtype=np.float32)
        # lightgbm types predictions as dense, sparse or a list (sparse inputs give those);
        # a dense input always gives an ndarray.
        if TASKS[self.model_type] == "regression":
            return cast(np.ndarray, self.model.predict(x)).reshape(-1, 1)
        classifier = cast("LGBMClassifier", self.model)  # every other task is a classifier
        return cast(np.ndarray, classifier.predict_proba(x))

    def describe(self) -> dict:
        return {"learner": "lightgbm", "params": _plain(self.params)}


class ScaledLogistic:
    """Standardize, then logistic regression. The centring uses float32 means: ONNX
    subtracts in float32, and the difference of two nearby float32 numbers is exact, so
    features near 1.0 (price ratios) lose no precision there."""

    def __init__(self, c: float = 0.1):
        self.c = c

    def fit(self, x: np.ndarray, y: np.ndarray) -> ScaledLogistic:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(x, dtype=np.float64)
        self.scaler = StandardScaler().fit(x)
        self.scaler.mean_ = self.scaler.mean_.astype(np.float32).astype(np.float64)
        self.logistic = LogisticRegression(C=self.c, max_iter=500)
        self.logistic.fit(self.scaler.transform(x), y.astype(np.int64))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.logistic.predict_proba(self.scaler.transform(np.asarray(x, dtype=np.float64)))

    def as_pipeline(self):
        """The fitted steps as a scikit-learn Pipeline, for the ONNX converter only."""
        from sklearn.pipeline import Pipeline

        return Pipeline([("scale", self.scaler), ("logistic", self.logistic)])


# Base probabilities are clipped before the logit so a forest's 0 or 1 stays finite.
LOGIT_CLIP = 1e-6
META_FRACTION = 0.3  # the latest 30 % of a training set fits the meta-learner
# Rows drawn for each forest tree: bounds the forest's cost on large pooled sets.
FOREST_SAMPLES = 20_000


def logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log(1 - p)


class StackedDirection:
    """Stacked ensemble for ``direction``: LightGBM, a random forest and a scaled logistic
    regression, combined by a logistic meta-learner on the logits of their P(up).

    Fitting is time-ordered: the bases are fitted on the earlier rows, the meta-learner on
    their out-of-sample predictions for the latest ``META_FRACTION`` (purged like a fold),
    then the bases are refitted on every row, as scikit-learn's stacking does.
    """

    model_type = "direction"

    def __init__(self, **gbt_overrides):
        self.gbt_overrides = gbt_overrides  # smaller boosted trees for tests

    def fit(
        self, x: np.ndarray, y: np.ndarray, open_time: np.ndarray, purge_ms: int
    ) -> StackedDirection:
        from sklearn.linear_model import LogisticRegression

        early, late = time_holdout(open_time, purge_ms, META_FRACTION)
        self._fit_bases(x[early], y[early])
        self.meta = LogisticRegression(C=1.0)
        self.meta.fit(self.base_logits(x[late]), y[late].astype(np.int64))
        self._fit_bases(x, y)
        return self

    def _fit_bases(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import RandomForestClassifier

        self.gbt = GradientBoosted("direction", **self.gbt_overrides).fit(x, y)
        self.forest = RandomForestClassifier(
            n_estimators=32,
            max_depth=6,
            min_samples_leaf=200,
            max_features="sqrt",
            max_samples=min(1.0, FOREST_SAMPLES / len(x)),
            random_state=SEED,
            n_jobs=1,
        ).fit(x, y.astype(np.int64))
        float32_exact_forest(self.forest)
        self.logistic = ScaledLogistic().fit(x, y)

    def base_logits(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) logits of P(up) from the gradient-boosted, forest and logistic bases."""
        x32 = np.asarray(x, dtype=np.float32)
        p = np.column_stack(
            [
                self.gbt.predict(x32)[:, 1],
                self.forest.predict_proba(x32)[:, 1],
                self.logistic.predict_proba(x32)[:, 1],
            ]
        )
        return logits(p)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.meta.predict_proba(self.base_logits(x))

    def describe(self) -> dict:
        return {
            "learner": "stacked ensemble",
            "bases": {
                "lightgbm": _plain(self.gbt.params),
                "random_forest": _plain(self.forest.get_params()),
                "logistic": {"C": self.logistic.c, "scaling": "standard, float32 means"},
            },
            "meta": {
                "logistic_on": "logits of each base's P(up) (gbt, forest, logistic)",
                "C": 1.0,
                "coef": self.meta.coef_[0].tolist(),
                "intercept": float(self.meta.intercept_[0]),
                "fit_on": f"latest {META_FRACTION:.0%} of the training rows, bases fitted before",
            },
        }


def make_learner(model_type: str, learner: str):
    """A fresh learner: ``lightgbm`` for any model type, ``stacked`` for direction only."""
    if learner == "lightgbm":
        return GradientBoosted(model_type)
    if learner == "stacked" and model_type == "direction":
        return StackedDirection()
    raise ValueError(f"no {learner!r} learner for model type {model_type!r}")


def _plain(params: dict) -> dict:
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, type(None)))}
