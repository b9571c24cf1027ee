"""Models, pure (no Ray): what a model predicts and how it is judged.

``labels`` (the targets), ``registry`` (versioned ONNX models and their manifests),
``predictor`` (an ONNX Runtime session behind one call), ``scoring`` (the per-row rules
that live outcomes and the evaluation report share) and ``training`` (datasets,
walk-forward validation, learners, ONNX export).
"""
