"""ONNX export of the learners in ``models``, with metadata, and the parity check (pure:
models in, bytes out; no files).

Every graph has one float32 input ``features`` of shape [None, n]. What the server reads is
declared by ``OUTPUTS`` (copied into each manifest): it runs exactly
``session.run([tensor])[0][:, columns]``. Bytes are reproducible: the graph name is fixed
(converters default to a random uuid) and metadata is written in a fixed order.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from orchestrator.models.training.models import LOGIT_CLIP, GradientBoosted, StackedDirection

INPUT = "features"
TARGET_OPSET = 15
OUTPUTS = {
    "direction": {"tensor": "probabilities", "columns": [1], "names": ["prob_up"]},
    "swing": {
        "tensor": "probabilities",
        "columns": [1, 2],
        "names": ["p_swing_high", "p_swing_low"],
    },
    "volatility": {"tensor": "variable", "columns": [0], "names": ["volatility"]},
    "return": {"tensor": "variable", "columns": [0], "names": ["log_return"]},
}


def to_onnx(learner, n_features: int) -> onnx.ModelProto:
    """The learner as one ONNX graph (a stacked ensemble included)."""
    if isinstance(learner, GradientBoosted):
        return lightgbm_graph(learner.model, n_features)
    if isinstance(learner, StackedDirection):
        return stacked_graph(learner, n_features)
    raise TypeError(f"cannot export {type(learner).__name__}")


def lightgbm_graph(model, n_features: int) -> onnx.ModelProto:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    return convert_lightgbm(
        model,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        zipmap=False,
        target_opset=TARGET_OPSET,
    )


def sklearn_graph(model, n_features: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(
        model,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
    )


def stacked_graph(ensemble: StackedDirection, n_features: int) -> onnx.ModelProto:
    """Base graphs side by side on the shared input, then the meta-learner as plain ops:
    logit of each base's P(up), a linear layer, a sigmoid; outputs ``label`` and
    ``probabilities`` like a single classifier's."""
    bases = {
        "gbt": lightgbm_graph(ensemble.gbt.model, n_features),
        "rf": sklearn_graph(ensemble.forest, n_features),
        "lr": sklearn_graph(ensemble.logistic.as_pipeline(), n_features),
    }
    nodes, initializers, p_up = [], [], []
    for prefix, base in bases.items():
        prefixed = onnx.compose.add_prefix(base, f"{prefix}/")
        nodes.append(helper.make_node("Identity", [INPUT], [f"{prefix}/{INPUT}"]))
        nodes.extend(prefixed.graph.node)
        initializers.extend(prefixed.graph.initializer)
        p_up.append(_column_one(nodes, f"{prefix}/probabilities", prefix))
    meta_nodes, meta_initializers = _meta_learner(p_up, ensemble.meta)
    graph = helper.make_graph(
        nodes + meta_nodes,
        "stacked",
        [_input(n_features)],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        initializers + meta_initializers,
    )
    model = helper.make_model(
        graph, opset_imports=_merged_opsets(bases.values()), producer_name="tickcast"
    )
    # helper stamps the newest IR version, which ONNX Runtime may not read yet.
    model.ir_version = max(base.ir_version for base in bases.values())
    return model


def _column_one(nodes: list, tensor: str, prefix: str) -> str:
    """Append nodes taking column 1 (P(up)) of an (n, 2) tensor; return its name."""
    out = f"{prefix}/p_up"
    nodes.append(helper.make_node("Gather", [tensor, "meta/one_index"], [out], axis=1))
    return out


def _meta_learner(p_up: list[str], meta) -> tuple[list, list]:
    f32 = np.float32
    initializers = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "meta/one_index"),
        numpy_helper.from_array(np.array(LOGIT_CLIP, dtype=f32), "meta/clip_low"),
        numpy_helper.from_array(np.array(1 - LOGIT_CLIP, dtype=f32), "meta/clip_high"),
        numpy_helper.from_array(np.array(1.0, dtype=f32), "meta/unit"),
        numpy_helper.from_array(meta.coef_.T.astype(f32), "meta/coef"),
        numpy_helper.from_array(meta.intercept_.astype(f32), "meta/intercept"),
    ]
    node = helper.make_node
    nodes = [
        node("Concat", p_up, ["meta/p"], axis=1),
        node("Clip", ["meta/p", "meta/clip_low", "meta/clip_high"], ["meta/p_clipped"]),
        node("Sub", ["meta/unit", "meta/p_clipped"], ["meta/p_down"]),
        node("Log", ["meta/p_clipped"], ["meta/log_up"]),
        node("Log", ["meta/p_down"], ["meta/log_down"]),
        node("Sub", ["meta/log_up", "meta/log_down"], ["meta/logits"]),
        node("MatMul", ["meta/logits", "meta/coef"], ["meta/score_raw"]),
        node("Add", ["meta/score_raw", "meta/intercept"], ["meta/score"]),
        node("Sigmoid", ["meta/score"], ["meta/prob_up"]),
        node("Sub", ["meta/unit", "meta/prob_up"], ["meta/prob_down"]),
        node("Concat", ["meta/prob_down", "meta/prob_up"], ["probabilities"], axis=1),
        node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    return nodes, initializers


def _merged_opsets(models) -> list:
    """The highest version each domain needs, and at least TARGET_OPSET for ours."""
    versions: dict[str, int] = {"": TARGET_OPSET}
    for model in models:
        for op in model.opset_import:
            versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    return [helper.make_opsetid(domain, v) for domain, v in sorted(versions.items())]


def _input(n_features: int):
    return helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, n_features])


def finalize(model: onnx.ModelProto, graph_name: str, metadata: dict) -> bytes:
    """Fixed graph name, opsets sorted by domain, metadata (JSON for non-strings) in the
    given order, serialized deterministically: the same model gives the same bytes in any
    process (converters name graphs by a random uuid and list opsets in an order that
    depends on what the process converted before)."""
    model.graph.name = graph_name
    opsets = sorted((op.domain, op.version) for op in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, v) for domain, v in opsets)
    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def onnx_outputs(model_bytes: bytes, x: np.ndarray, outputs: dict) -> np.ndarray:
    """What the server computes: the declared columns of the declared output tensor."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    values = session.run([outputs["tensor"]], {name: np.asarray(x, dtype=np.float32)})[0]
    return values[:, outputs["columns"]]


def parity(model_bytes: bytes, learner, x: np.ndarray, outputs: dict) -> float:
    """Max |ONNX - native| over the served columns on rows ``x``."""
    native = learner.predict(np.asarray(x, dtype=np.float32))[:, outputs["columns"]]
    return float(np.max(np.abs(onnx_outputs(model_bytes, x, outputs) - native)))
