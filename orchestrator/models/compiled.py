"""Tree ensembles compiled to native code from their ONNX graph (the backfill's fast path).

ONNX stays the interchange format: a registry model whose answer is one ``ai.onnx.ml``
TreeEnsembleClassifier or TreeEnsembleRegressor (through Identity nodes, or a product with
a constant 1, only) is rewritten
here as a LightGBM text model, which ``lleaves`` compiles with LLVM into a function that
walks the trees natively: about 4x fewer microseconds per row than ONNX Runtime on these
models. Everything else (the stacked direction models, a graph with other operators, no
``lleaves`` installed) stays on ONNX Runtime.

The rewrite reproduces ONNX Runtime's semantics on float32 input: a split sends a row to
its true child iff ``x <= v`` (``BRANCH_LEQ``; ``LT``/``GT``/``GTE`` are rewritten as
``<=`` with the float32 below ``v`` and the children swapped as needed), NaN goes where
``nodes_missing_value_tracks_true`` says, thresholds and leaves are written as their exact
float32 values, and rows are rounded to float32 before the compiled code sees them (as
``OnnxPredictor`` does). A ``CompiledTrees`` predictor still checks itself: its first
call also runs ONNX Runtime on up to ``CHECK_ROWS`` of the rows and falls back to it for
good if any answer differs by more than ``TOLERANCE``.

Compiled objects are cached per rewritten model (its hash), lleaves version and host CPU under
``$TICKCAST_CACHE_DIR`` (default ``~/.cache/tickcast``): a worker that finds one loads it
in milliseconds instead of compiling for a second or two.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.features import FEATURE_NAMES
from orchestrator.models.calibration import calibrate_values
from orchestrator.models.predictor import OnnxPredictor, OutputSpec, column_selector
from orchestrator.models.registry import ModelManifest

if TYPE_CHECKING:  # onnx is imported where a model is read: replicas on ONNX Runtime skip it
    import onnx

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
CHECK_ROWS = 4096
_MODES = {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT", "BRANCH_GTE", "LEAF"}


class NotCompilable(ValueError):
    """The model is not a single tree ensemble this module can rewrite exactly."""


@dataclass
class Tree:
    """One tree in LightGBM's layout: internal nodes root first; a child ``>= 0`` is an
    internal node, ``~i`` (negative) is leaf ``i``."""

    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    default_left: list[bool] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    leaf_value: list[float] = field(default_factory=list)
    class_id: int = 0


@dataclass
class Ensemble:
    kind: str  # "binary", "multiclass" or "regression"
    n_features: int
    n_outputs: int  # classes of a multiclass model, else 1
    trees: list[Tree]


def _f32(x) -> float:
    return float(np.float32(x))


def _below_f32(x) -> float:
    """The largest float32 below ``x``: ``x < v`` is ``x <= below(v)`` for float32 ``x``."""
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


def _ensemble_node(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    """The TreeEnsemble node whose scores (a classifier's probabilities, a regressor's
    values) ``tensor`` is, through nodes that pass them on unchanged."""
    from onnx import numpy_helper

    producers = {out: node for node in model.graph.node for out in node.output}
    ones = {
        init.name for init in model.graph.initializer if np.all(numpy_helper.to_array(init) == 1)
    }
    node = producers.get(tensor)
    while node is not None and _passes_through(node, ones):
        tensor = next(t for t in node.input if t not in ones)
        node = producers.get(tensor)
    scores = {"TreeEnsembleClassifier": 1, "TreeEnsembleRegressor": 0}
    if node is None or node.op_type not in scores or node.output[scores[node.op_type]] != tensor:
        raise NotCompilable(f"output {tensor!r} is not a tree ensemble's scores")
    if node.domain != "ai.onnx.ml":
        raise NotCompilable(f"{node.op_type} of domain {node.domain!r}")
    return node


def _passes_through(node: onnx.NodeProto, ones: set[str]) -> bool:
    """Identity, or a product with a constant 1 (onnxmltools ends a LightGBM classifier
    with one)."""
    if node.op_type == "Identity":
        return True
    return node.op_type == "Mul" and len(node.input) == 2 and len(set(node.input) & ones) == 1


def parse_ensemble(model_bytes: bytes, tensor: str, n_features: int) -> Ensemble:
    """The tree ensemble that answers ``tensor`` (the manifest's output tensor)."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(model_bytes)
    node = _ensemble_node(model, tensor)
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    if any(name.endswith("_as_tensor") for name in a):
        raise NotCompilable("attributes stored as tensors")
    post = a.get("post_transform", b"NONE")
    post = post.decode() if isinstance(post, bytes) else post
    if node.op_type == "TreeEnsembleClassifier":
        prefix = "class_"
        labels = a.get("classlabels_int64s") or a.get("classlabels_strings") or []
        if len(labels) == 2 and len(set(a["class_ids"])) == 1 and post == "LOGISTIC":
            kind, n_out = "binary", 1
        elif len(labels) >= 3 and post == "SOFTMAX":
            kind, n_out = "multiclass", len(labels)
        else:
            raise NotCompilable(f"classifier with {len(labels)} classes and {post}")
    else:
        prefix = "target_"
        aggregate = a.get("aggregate_function", b"SUM")
        if aggregate not in (b"SUM", "SUM") or a.get("n_targets", 1) != 1 or post != "NONE":
            raise NotCompilable("only single-target, summed regressors without a transform")
        kind, n_out = "regression", 1
    base = list(a.get("base_values") or [0.0] * n_out)
    if kind == "binary" and len(base) == 2:  # ONNX Runtime adds the class-1 entry
        base = [base[1]]
    leaves: dict[tuple[int, int], dict[int, float]] = {}
    for t, n, c, w in zip(
        a[prefix + "treeids"],
        a[prefix + "nodeids"],
        a[prefix + "ids"],
        a[prefix + "weights"],
        strict=True,
    ):
        weights = leaves.setdefault((int(t), int(n)), {})
        weights[int(c)] = weights.get(int(c), 0.0) + _f32(w)
    nodes = _NodeTable(a)
    trees = [nodes.tree(t, leaves) for t in nodes.tree_ids()]
    if max((f for tree in trees for f in tree.feature), default=-1) >= n_features:
        raise NotCompilable("a split reads a feature the model has no input for")
    trees += [Tree(leaf_value=[_f32(b)], class_id=c) for c, b in enumerate(base) if b != 0.0]
    if kind == "multiclass":
        trees = _interleaved(trees, n_out)
    return Ensemble(kind, n_features, n_out, trees)


class _NodeTable:
    def __init__(self, a: dict):
        self.tree_of = np.asarray(a["nodes_treeids"])
        self.node_id = np.asarray(a["nodes_nodeids"])
        self.feature = np.asarray(a["nodes_featureids"])
        self.value = np.asarray(a["nodes_values"], dtype=np.float32)
        self.mode = [m.decode() if isinstance(m, bytes) else m for m in a["nodes_modes"]]
        self.true = np.asarray(a["nodes_truenodeids"])
        self.false = np.asarray(a["nodes_falsenodeids"])
        tracks = a.get("nodes_missing_value_tracks_true") or [0] * len(self.tree_of)
        self.nan_true = np.asarray(tracks, dtype=bool)
        unknown = set(self.mode) - _MODES
        if unknown:
            raise NotCompilable(f"node modes {sorted(unknown)}")
        self.index: dict[int, dict[int, int]] = {}
        for i, (t, n) in enumerate(zip(self.tree_of.tolist(), self.node_id.tolist(), strict=True)):
            self.index.setdefault(t, {})[n] = i

    def tree_ids(self) -> list[int]:
        return sorted(self.index)

    def tree(self, t: int, leaves: dict[tuple[int, int], dict[int, float]]) -> Tree:
        at = self.index[t]
        order, stack = [], [0]  # depth first from the root: LightGBM wants it at index 0
        while stack:
            n = stack.pop()
            order.append(n)
            if self.mode[at[n]] != "LEAF":
                stack.extend([int(self.false[at[n]]), int(self.true[at[n]])])
        if len(order) != len(at):
            raise NotCompilable(f"tree {t} has unreachable or shared nodes")
        is_leaf = [self.mode[at[n]] == "LEAF" for n in order]
        leaf_no = {n: k for k, n in enumerate(n for n in order if self.mode[at[n]] == "LEAF")}
        inner_no = {n: k for k, n in enumerate(n for n in order if self.mode[at[n]] != "LEAF")}

        def child(n: int) -> int:
            return inner_no[n] if n in inner_no else ~leaf_no[n]

        tree, classes = Tree(), set[int]()
        for n, leaf in zip(order, is_leaf, strict=True):
            i = at[n]
            if leaf:
                weights = leaves.get((t, n), {})
                if len(weights) > 1:
                    raise NotCompilable(f"tree {t}: a leaf weighs several classes")
                classes.update(weights)
                tree.leaf_value.append(next(iter(weights.values()), 0.0))
                continue
            yes, no, nan_yes = child(int(self.true[i])), child(int(self.false[i])), self.nan_true[i]
            mode, v = self.mode[i], self.value[i]
            threshold = _f32(v) if mode in ("BRANCH_LEQ", "BRANCH_GT") else _below_f32(v)
            if mode in ("BRANCH_LEQ", "BRANCH_LT"):  # true: x <= threshold
                left, right, nan_left = yes, no, bool(nan_yes)
            else:  # true: x > threshold, i.e. not x <= threshold
                left, right, nan_left = no, yes, not nan_yes
            tree.feature.append(int(self.feature[i]))
            tree.threshold.append(threshold)
            tree.default_left.append(nan_left)
            tree.left.append(left)
            tree.right.append(right)
        if len(classes) > 1:
            raise NotCompilable(f"tree {t} adds to several classes")
        tree.class_id = classes.pop() if classes else 0
        return tree


def _interleaved(trees: list[Tree], n_classes: int) -> list[Tree]:
    """LightGBM's order for a multiclass model: tree ``i`` adds to class ``i % n``."""
    per_class = [[t for t in trees if t.class_id == c] for c in range(n_classes)]
    width = max(len(p) for p in per_class)
    for c, trees_of_c in enumerate(per_class):
        trees_of_c.extend(
            Tree(leaf_value=[0.0], class_id=c) for _ in range(width - len(trees_of_c))
        )
    return [per_class[c][k] for k in range(width) for c in range(n_classes)]


def lightgbm_text(ensemble: Ensemble) -> str:
    """The ensemble as a LightGBM model file (what lleaves reads)."""

    def numbers(values) -> str:
        return " ".join(f"{x:.17g}" for x in values)

    blocks = []
    for k, t in enumerate(ensemble.trees):
        lines = [f"Tree={k}", f"num_leaves={len(t.leaf_value)}", "num_cat=0"]
        if t.feature:
            zeros = " ".join("0" for _ in t.feature)
            lines += [
                "split_feature=" + " ".join(map(str, t.feature)),
                "split_gain=" + zeros,
                "threshold=" + numbers(t.threshold),
                # decision_type: bit 1 default left, bits 2-3 missing type (2: NaN)
                "decision_type=" + " ".join(str(8 | (2 if d else 0)) for d in t.default_left),
                "left_child=" + " ".join(map(str, t.left)),
                "right_child=" + " ".join(map(str, t.right)),
            ]
        leaf_zeros = " ".join("0" for _ in t.leaf_value)
        lines += [
            "leaf_value=" + numbers(t.leaf_value),
            "leaf_weight=" + leaf_zeros,
            "leaf_count=" + leaf_zeros,
        ]
        if t.feature:
            lines += [f"internal_{name}=" + zeros for name in ("value", "weight", "count")]
        lines += ["is_linear=0", "shrinkage=1"]
        blocks.append("\n".join(lines) + "\n\n")
    objective = {
        "binary": "binary sigmoid:1",
        "regression": "regression",
        "multiclass": f"multiclass num_class:{ensemble.n_outputs}",
    }[ensemble.kind]
    n = ensemble.n_features
    header = [
        "tree",
        "version=v4",
        f"num_class={ensemble.n_outputs}",
        f"num_tree_per_iteration={ensemble.n_outputs}",
        "label_index=0",
        f"max_feature_idx={n - 1}",
        f"objective={objective}",
        "feature_names=" + " ".join(f"f{i}" for i in range(n)),
        "feature_infos=" + " ".join("[-1e+300:1e+300]" for _ in range(n)),
        "tree_sizes=" + " ".join(str(len(b)) for b in blocks),
        "",
        "",
    ]
    return "\n".join(header) + "".join(blocks) + "end of trees\n\npandas_categorical:null\n"


def cache_dir() -> Path:
    root = os.environ.get("TICKCAST_CACHE_DIR") or Path.home() / ".cache" / "tickcast"
    return Path(root) / "compiled-trees"


def _compiled_model(manifest: ModelManifest, text: str):
    """An lleaves model, compiled once per model, lleaves version and CPU (cached)."""
    import lleaves
    from llvmlite import binding

    cpu = f"{platform.machine()}-{binding.get_host_cpu_name()}"
    # Named by the text compiled, not the model file: a change of this rewrite recompiles.
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = f"{manifest.model_id}-{digest}-lleaves{version('lleaves')}-{cpu}"
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text)
        compiled = lleaves.Model(model_file=str(model_file))
        cached = folder / f"{name}.o"
        if cached.exists():
            compiled.compile(cache=str(cached))
        else:  # compile beside it, then publish in one rename: workers race safely
            fresh = Path(tmp) / "model.o"
            compiled.compile(cache=str(fresh))
            os.replace(fresh, cached)
    return compiled


class CompiledTrees:
    """``OnnxPredictor``'s interface over a compiled tree ensemble; its first call checks
    itself against ONNX Runtime and falls back to it if they differ."""

    def __init__(self, manifest: ModelManifest, model_bytes: bytes):
        self.manifest = manifest
        self.outputs = OutputSpec.of(manifest)
        self._onnx = OnnxPredictor(manifest, model_bytes)
        n_features = len(manifest.feature_names)
        self.ensemble = parse_ensemble(model_bytes, self.outputs.tensor, n_features)
        self._model = _compiled_model(manifest, lightgbm_text(self.ensemble))
        self._columns = column_selector([FEATURE_NAMES.index(n) for n in manifest.feature_names])
        self.checked = False  # the first call compares with ONNX Runtime
        self.active = True  # False once a check failed: ONNX Runtime answers from then on

    def warm_up(self) -> None:
        self._onnx.warm_up()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """As ``OnnxPredictor.predict``: the trees' outputs, then the manifest's calibration
        (the same map, applied after the parity check of the trees themselves: a steep
        stretch of the map would magnify float rounding the trees are allowed)."""
        return calibrate_values(self._onnx.calibration, self.predict_raw(rows))

    def predict_raw(self, rows: np.ndarray) -> np.ndarray:
        if not self.active:
            return self._onnx.predict_raw(rows)
        values = self._native(rows)
        if not self.checked and len(values):
            self.checked = True
            sample = rows[:CHECK_ROWS]
            expected = self._onnx.predict_raw(sample)
            worst = float(np.nanmax(np.abs(values[: len(sample)] - expected), initial=0.0))
            same_nan = np.array_equal(np.isnan(values[: len(sample)]), np.isnan(expected))
            if worst > TOLERANCE or not same_nan:
                log.warning(
                    "%s: compiled trees differ from ONNX Runtime by %.3g; using ONNX Runtime",
                    self.manifest.key,
                    worst,
                )
                self.active = False
                return self._onnx.predict_raw(rows)
        return values

    def _native(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim != 2 or rows.shape[1] != len(FEATURE_NAMES):
            return self._onnx.predict_raw(rows)  # its error names the problem
        if len(rows) == 0:
            return np.empty((0, len(self.outputs.names)))
        # float32 first, as ONNX Runtime reads them: the thresholds are float32 values
        x = np.ascontiguousarray(rows[:, self._columns], dtype=np.float32).astype(np.float64)
        out = np.asarray(self._model.predict(x, n_jobs=1), dtype=np.float64)
        out = out.reshape(len(x), -1)
        if self.ensemble.kind == "binary":  # P(class 1); ONNX answers [P(0), P(1)]
            out = np.hstack([1.0 - out, out])
        return out[:, list(self.outputs.columns)]

    @property
    def in_distribution(self):
        return self._onnx.in_distribution

    def answer(self, values: np.ndarray, rows: np.ndarray | None = None) -> dict:
        return self._onnx.answer(values, rows)


def fastest_predictor(manifest: ModelManifest, model_bytes: bytes) -> OnnxPredictor | CompiledTrees:
    """Compiled trees where the model is one tree ensemble and lleaves is installed, else
    ONNX Runtime."""
    try:
        return CompiledTrees(manifest, model_bytes)
    except NotCompilable as exc:
        log.info("%s stays on ONNX Runtime: %s", manifest.key, exc)
    except ImportError:
        log.info("lleaves is not installed: %s stays on ONNX Runtime", manifest.key)
    except Exception as exc:  # a compiler failure costs speed, never the job
        log.warning("%s: compiling its trees failed (%s); ONNX Runtime instead", manifest.key, exc)
    return OnnxPredictor(manifest, model_bytes)


Predictor = OnnxPredictor | CompiledTrees  # what ``fastest_predictor`` gives


def engine_of(predictor: Predictor) -> str:
    """What answers for ``predictor`` now: ``compiled trees`` or ``onnxruntime``."""
    compiled = isinstance(predictor, CompiledTrees) and predictor.active
    return "compiled trees" if compiled else "onnxruntime"


ENGINES = ("auto", "onnx")


def predictor_factory(engine: str):
    """What makes a predictor for ``engine`` (``serving.engine``, ``backfill --engine``):
    ``fastest_predictor`` for ``auto``, ``OnnxPredictor`` for ``onnx``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return fastest_predictor if engine == "auto" else OnnxPredictor
