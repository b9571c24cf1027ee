#!/usr/bin/env python
"""List, promote, roll back and copy model versions, in the file registry (models_onnx/) or
MLflow's Model Registry.

    tickcast registry list [--type direction] [--timeframe 1h]
    tickcast registry promote direction-1h v1 [--force --reason "why"] [--log var/predictions]
    tickcast registry rollback direction-1h [--reason "why"]
    tickcast registry demote return-1m v1 --reason "why"
    tickcast registry challenger direction-1h v3 [--reason "why"]   (--clear: no challenger)
    tickcast registry history direction-1h
    tickcast registry copy direction-1h v2 --to mlflow:http://127.0.0.1:5000
    tickcast registry --root mlflow:http://127.0.0.1:5000 list   (or TICKCAST_REGISTRY=...)

promote makes one version production and archives the production version it replaces; it
is refused for a version that does not beat its naive baseline out of sample, or that ran
live as a shadow or canary challenger and did not beat its champion on the live outcomes
(read from the outcome log beside ``--log``, the config's ``sink.log_dir``) with the 95%
interval clear of zero, unless forced with a reason. rollback restores the version the
current production one replaced (repeatable: each rollback steps one promotion further
back). Every change is recorded in the model's history. A running app whose config does
not pin a version picks the new production version up within ``serving.registry_poll_s``
(see docs/models.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pyarrow.dataset as ds

from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.comparison import compare_outcomes
from orchestrator.models.registry import (
    ModelManifest,
    RegistryError,
    open_registry,
    version_sort_key,
)
from orchestrator.sinks.parquet_log import read_log
from orchestrator.storage import locate
from orchestrator.stream.outcomes import OUTCOME_SCHEMA

DEFAULT_LOG = "var/predictions"  # sink.log_dir's default


def primary_metric(manifest: ModelManifest) -> str:
    model = manifest.metrics.get("model", {})
    for key in ("log_loss", "rmse"):
        if model.get(key) is not None:
            return f"{key} {model[key]:.4g}"
    return "-"


def listing_order(m: ModelManifest) -> tuple:
    """Model type, timeframe (shortest first), version (v2 before v10): the same order from
    every registry backend."""
    return (m.model_type, timeframe_ms(m.timeframe), version_sort_key(m.version))


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
    parser.add_argument(
        "--root",
        default=os.environ.get("TICKCAST_REGISTRY", "models_onnx"),
        help="registry: a folder, or mlflow:<tracking URI> (default: $TICKCAST_REGISTRY, "
        "else models_onnx)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every version with its stage and metrics")
    listing.add_argument("--type", dest="model_type")
    listing.add_argument("--timeframe")
    promote = commands.add_parser("promote", help="make a version production")
    promote.add_argument("model_id", help="<model_type>-<timeframe>, e.g. direction-1h")
    promote.add_argument("version", help="e.g. v2")
    promote.add_argument(
        "--force", action="store_true", help="promote without the evidence (needs --reason)"
    )
    promote.add_argument("--reason", help="why (recorded in the history)")
    promote.add_argument(
        "--log",
        default=os.environ.get("TICKCAST_LOG_DIR", DEFAULT_LOG),
        help=(
            "the prediction log (sink.log_dir) whose outcomes hold the version's live record "
            "as a challenger (default $TICKCAST_LOG_DIR, else var/predictions)"
        ),
    )
    rollback = commands.add_parser("rollback", help="restore the previous production version")
    rollback.add_argument("model_id")
    rollback.add_argument("--reason", help="why (recorded in the history)")
    demote = commands.add_parser("demote", help="take a version out of production")
    demote.add_argument("model_id")
    demote.add_argument("version")
    demote.add_argument("--reason", required=True, help="why (recorded in the history)")
    mark = commands.add_parser(
        "challenger",
        help="mark the version a shadow or canary without a version runs (MLflow alias "
        "`challenger`)",
    )
    mark.add_argument("model_id")
    mark.add_argument("version", nargs="?", help="omit with --clear")
    mark.add_argument("--clear", action="store_true", help="no challenger")
    mark.add_argument("--reason", help="why (recorded in the history)")
    history = commands.add_parser("history", help="every promotion, rollback and demotion")
    history.add_argument("model_id")
    copy = commands.add_parser("copy", help="copy a version into another registry")
    copy.add_argument("model_id")
    copy.add_argument("version")
    copy.add_argument("--to", required=True, help="the other registry: folder or mlflow:<URI>")
    args = parser.parse_args(argv)
    if args.command == "promote" and args.force and not (args.reason or "").strip():
        parser.error("--force needs --reason: a forced promotion is recorded with its reason")
    if args.command == "challenger" and (args.version is None) != args.clear:
        parser.error("challenger needs a version, or --clear (and not both)")
    return args


def format_history(entries: list[dict]) -> list[str]:
    lines = []
    for e in entries:
        extra = {
            k: v
            for k, v in e.items()
            if k not in ("at", "by", "action", "model_id", "version") and v not in (None, False)
        }
        lines.append(
            f"{e['at']}  {e['action']:<8} {e['model_id']}@{e['version']}  by {e['by']}  "
            + json.dumps(extra)
        )
    return lines or ["(no promotions, rollbacks or demotions recorded)"]


def live_comparison(log_dir: str, model_id: str, version: str) -> dict | None:
    """The version's live comparison with its champion from the outcome log, or None when
    it never ran as a challenger there."""
    outcomes = locate(log_dir).sibling("outcomes")
    if not outcomes.is_dir():
        return None
    table = read_log(outcomes, OUTCOME_SCHEMA, where=ds.field("model_id") == model_id)
    return compare_outcomes(table, model_id, version)


def format_comparison(c: dict) -> str:
    if c["improvement"] is None:
        return f"live: {c['verdict']}"
    interval = "no interval" if c["ci95"] is None else "95% [{:.5f}, {:.5f}]".format(*c["ci95"])
    return (
        f"live, against champion {c['champion_version']}: {c['pairs']} paired outcomes in "
        f"{c['blocks']} blocks; loss {c['champion_loss']:.5f} -> {c['challenger_loss']:.5f}, "
        f"improvement {c['improvement']:.5f} ({interval}): {c['verdict']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        registry = open_registry(args.root)
        if args.command == "list":
            found = registry.manifests(args.model_type, args.timeframe)
            print("\n".join(format_rows(sorted(found, key=listing_order))))
        elif args.command == "promote":
            live = live_comparison(args.log, args.model_id, args.version)
            if live is not None:
                print(format_comparison(live))
            promoted = registry.promote(
                args.model_id, args.version, reason=args.reason, force=args.force, live=live
            )
            print(describe(promoted))
        elif args.command == "rollback":
            print(describe(registry.rollback(args.model_id, reason=args.reason)))
        elif args.command == "demote":
            print(describe(registry.demote(args.model_id, args.version, reason=args.reason)))
        elif args.command == "challenger":
            marked = registry.set_challenger(args.model_id, args.version, reason=args.reason)
            done = f"{marked.key} is the challenger" if marked else "no challenger"
            print(done if marked else f"{args.model_id}: {done}")
        elif args.command == "history":
            print("\n".join(format_history(registry.history(args.model_id))))
        else:
            copied = registry.copy_to(open_registry(args.to), args.model_id, args.version)
            print(f"{copied.key} copied to {args.to} (stage {copied.stage})")
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
