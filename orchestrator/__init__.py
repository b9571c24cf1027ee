"""tickcast pipeline: market data, features, labels and the Ray actors that run them.

Pure logic (``orchestrator.market``, ``orchestrator.features``, ``orchestrator.models.labels``)
imports neither Ray nor any I/O library beyond numpy/pandas/pyarrow; the Ray actors in
``orchestrator.actors`` are thin shells around it.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | Path) -> Path:
    """Resolve a configured path: absolute as given, relative against the project root.

    Ray workers do not share the shell's working directory, so every relative path in a
    config means "relative to the repository", whichever process reads it.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()
