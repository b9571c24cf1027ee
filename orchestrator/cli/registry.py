#!/usr/bin/env python
"""List, promote and roll back model versions in the registry (models_onnx/).

    tickcast registry list [--type direction] [--timeframe 1h]
    tickcast registry promote direction-1h v1
    tickcast registry rollback direction-1h

promote makes one version production and archives the production version it replaces;
rollback restores the version the current production one replaced (repeatable: each
rollback steps one promotion further back). A running app picks a new version up when its
deployment is reconfigured (see docs/models.md).
"""

from __future__ import annotations

import argparse
import sys

from orchestrator import resolve_path
from orchestrator.models.registry import ModelManifest, Registry, RegistryError


def primary_metric(manifest: ModelManifest) -> str:
    model = manifest.metrics.get("model", {})
    for key in ("log_loss", "rmse"):
        if model.get(key) is not None:
            return f"{key} {model[key]:.4g}"
    return "-"


def format_rows(manifests: list[ModelManifest]) -> list[str]:
    head = ("model", "version", "stage", "learner", "beats baseline", "out-of-sample", "sha256")
    rows = [head]
    for m in manifests:
        learner = (getattr(m, "learner", None) or {}).get("learner", "-")
        beats = m.metrics.get("beats_baseline")
        rows.append(
            (
                m.model_id,
                m.version,
                m.stage,
                learner,
                "-" if beats is None else ("yes" if beats else "no"),
                primary_metric(m),
                m.sha256[:12],
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    return [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def describe(manifest: ModelManifest) -> str:
    replaced = f" (replaced {manifest.previous_production})" if manifest.previous_production else ""
    return f"{manifest.key} is now {manifest.stage}{replaced}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="models_onnx", help="registry directory")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every version with its stage and metrics")
    listing.add_argument("--type", dest="model_type")
    listing.add_argument("--timeframe")
    promote = commands.add_parser("promote", help="make a version production")
    promote.add_argument("model_id", help="<model_type>-<timeframe>, e.g. direction-1h")
    promote.add_argument("version", help="e.g. v2")
    rollback = commands.add_parser("rollback", help="restore the previous production version")
    rollback.add_argument("model_id")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = Registry(resolve_path(args.root))
    try:
        if args.command == "list":
            print("\n".join(format_rows(registry.manifests(args.model_type, args.timeframe))))
        elif args.command == "promote":
            print(describe(registry.promote(args.model_id, args.version)))
        else:
            print(describe(registry.rollback(args.model_id)))
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
