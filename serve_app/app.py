"""Application builder: ``import_path: serve_app.app:build_app`` in configs/*.yaml.

``serve run configs/local.yaml`` calls ``build_app(args)`` with the application's ``args``;
a bad config fails here, before anything starts, with a message naming the field.
"""

from __future__ import annotations

import logging

from ray import serve

from orchestrator.config import (
    ConfigError,
    TickcastConfig,
    feed_symbol_lists,
    parse_config,
    with_feed_symbols,
)
from orchestrator.models.registry import evidence_problem, open_registry
from serve_app.ingress import Ingress
from serve_app.model_group import ModelInGroup, deployment_groups
from serve_app.model_server import ModelServer
from serve_app.pipeline import Pipeline

__all__ = ["ConfigError", "build_app"]

log = logging.getLogger("ray.serve")


def build_app(args: dict | TickcastConfig | None = None) -> serve.Application:
    config = parse_config(args)
    registry = open_registry(config.models_dir)
    # A model's version in its deployment's user_config: the one its config pins, else None
    # (the deployment serves the registry's production version and follows it).
    versions: dict[str, str | None] = {}
    for ref in config.models:
        manifest = registry.resolve(ref.model_type, ref.timeframe, ref.version, ref.role)
        registry.load_bytes(manifest)
        problem = evidence_problem(manifest)
        if problem:
            log.warning(
                "%s serves as a signal but %s (docs/models.md#promotion-on-evidence)",
                manifest.key,
                problem,
            )
        versions[ref.serving_key] = ref.version
    models: dict = {}
    for name, model_ids in deployment_groups(versions, config.serving.model_groups).items():
        grouped = config.serving.model_groups != "none"
        user_config = {
            **(
                {"versions": {key: versions[key] for key in model_ids}}
                if grouped
                else {"version": versions[model_ids[0]]}
            ),
            "max_batch_size": config.serving.max_batch_size,
            "batch_wait_timeout_s": config.serving.batch_wait_timeout_s,
            "registry_poll_s": config.serving.registry_poll_s,
            "ood_z_limit": config.signals.ood_z_limit,
        }
        deployment = ModelServer.options(
            name=name,
            user_config=user_config,
            ray_actor_options={
                "num_cpus": config.serving.num_cpus,
                **({"resources": config.serving.resources} if config.serving.resources else {}),
            },
            # A batch never exceeds max_ongoing_requests, so keep room for a full one.
            max_ongoing_requests=max(256, 2 * config.serving.max_batch_size * len(model_ids)),
            **_scaling(config.serving.autoscaling),
        ).bind(model_ids, config.models_dir, config.serving.engine)
        for key in model_ids:
            models[key] = ModelInGroup(deployment, key) if grouped else deployment
    # The pipeline's config names no model versions: a version switch changes only the model
    # deployment's user_config (reconfigured in place), never the pipeline's arguments.
    # (A challenger is always a pinned version, and keeps it.)
    unversioned = config.model_copy(
        update={
            "models": tuple(
                r.model_copy(update={"version": None}) if r.role == "production" else r
                for r in config.models
            )
        }
    )
    # Nor its feeds' symbol lists: they travel in its user_config (Pipeline.reconfigure), so a
    # `serve deploy` overriding only that user_config changes them in place (a change of
    # `args` changes Serve's code version for the app, which replaces every replica).
    bound = with_feed_symbols(unversioned, None)
    supervisor = config.placement.pipeline
    pipeline = Pipeline.options(
        user_config={"symbols": feed_symbol_lists(config)},
        ray_actor_options={
            "num_cpus": 0.1,
            **({"resources": dict(supervisor.resources)} if supervisor.resources else {}),
        },
    ).bind(bound, models)
    # Serve's default of 5 ongoing requests per replica would queue 32 clients behind 5, and
    # every open WebSocket holds one slot for as long as it is connected.
    ingress = Ingress.options(
        ray_actor_options={"num_cpus": config.serving.ingress_num_cpus},
        max_ongoing_requests=config.serving.ingress_max_ongoing_requests,
        **_scaling(config.serving.ingress_autoscaling),
    )
    return ingress.bind(bound, pipeline, models)


def _scaling(autoscaling) -> dict:
    if autoscaling is None:
        return {"num_replicas": 1}
    return {"autoscaling_config": autoscaling.model_dump()}
