"""Model training: labelled datasets, walk-forward validation, metrics beside naive
baselines, the learners, ONNX export and parity (pure: arrays in, bytes and dicts out).

``tickcast train`` (``orchestrator/cli/train.py``) is the shell that reads candle files,
runs this in parallel and writes ``models_onnx/``; nothing here touches files, Ray or the
network.
"""
