import pytest
import yaml

from orchestrator import PROJECT_ROOT
from orchestrator.config import (
    ConfigError,
    ReplayFeedConfig,
    SyntheticFeedConfig,
    TickcastConfig,
    parse_config,
)
from orchestrator.models.registry import evidence_problem, open_registry


def test_defaults_are_the_embedded_synthetic_market():
    config = TickcastConfig()
    assert isinstance(config.feeds[0], SyntheticFeedConfig)
    assert config.models[0].key == "direction-1m"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"feeds": [{"kind": "synthetic", "sped": 3}]}, "sped"),
        ({"features": {"timeframes": ["2m"]}}, "features.timeframes"),
        ({"feeds": [{"kind": "kafka"}]}, "feeds.0"),
        ({"serving": {"max_batch_size": 0}}, "serving.max_batch_size"),
        ({"signals": {"high": 0.8, "very_high": 0.7}}, "signals"),
        ({"models": [{"model_type": "direction", "timeframe": "5m"}]}, "5m"),
        ({"unknown_section": {}}, "unknown_section"),
    ],
)
def test_bad_config_names_the_field(args, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(args)


def test_config_is_frozen():
    config = TickcastConfig()
    with pytest.raises(ValueError):
        config.environment = "prod"


def test_synthetic_symbol_generation():
    assert SyntheticFeedConfig(n_symbols=3).symbol_list() == (
        "SYN0000/USDT",
        "SYN0001/USDT",
        "SYN0002/USDT",
    )


def test_replay_requires_a_path():
    with pytest.raises(ValueError, match="path"):
        ReplayFeedConfig()


def test_local_yaml_args_parse():
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "local.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "serve_app.app:build_app"
    parsed = parse_config(app["args"])
    assert parsed.environment == "local"
    assert all(isinstance(f, ReplayFeedConfig) and f.fallback == "synthetic" for f in parsed.feeds)
    assert len(parsed.features.timeframes) >= 4 and len({m.model_type for m in parsed.models}) >= 2


def test_exchange_feeds_split_into_actors_by_symbol_groups():
    from orchestrator.config import feed_actors

    config = TickcastConfig.model_validate(
        {
            "feeds": [
                {"kind": "synthetic"},
                {
                    "kind": "ccxt",
                    "exchange": "binance",
                    "symbols": [f"C{i}/USDT" for i in range(5)],
                    "symbols_per_actor": 2,
                },
            ]
        }
    )
    actors = feed_actors(config.feeds)
    assert [name for name, _ in actors] == [
        "synthetic-0",
        "ccxt-binance-1-0",
        "ccxt-binance-1-1",
        "ccxt-binance-1-2",
    ]
    groups = [feed.symbols for _, feed in actors[1:]]
    assert groups == [("C0/USDT", "C1/USDT"), ("C2/USDT", "C3/USDT"), ("C4/USDT",)]


def test_exchange_feed_secrets_are_named_not_given():
    with pytest.raises(ConfigError, match="api_key"):
        parse_config(
            {
                "feeds": [
                    {
                        "kind": "ccxt",
                        "exchange": "binance",
                        "symbols": ["BTC/USDT"],
                        "api_key": "oops",
                    }
                ]
            }
        )


@pytest.mark.parametrize(
    "name", ["local.yaml", "local-replay.yaml", "local-kafka.yaml", "production.yaml"]
)
def test_shipped_configs_pass_serve_schema_and_ours(name):
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((PROJECT_ROOT / "configs" / name).read_text())
    ServeDeploySchema.model_validate(config)
    for app in config["applications"]:
        parse_config(app["args"])


@pytest.mark.parametrize(
    "name", ["local.yaml", "local-replay.yaml", "local-kafka.yaml", "production.yaml"]
)
def test_shipped_configs_serve_only_models_that_beat_their_baselines(name):
    """Promotion on evidence, in the configs: every model a shipped config serves as a signal
    (the production role; a shadow challenger publishes nothing) resolves to a version that
    beats its naive baseline out of sample."""
    config = yaml.safe_load((PROJECT_ROOT / "configs" / name).read_text())
    registry = open_registry("models_onnx")
    for app in config["applications"]:
        parsed = parse_config(app["args"])
        for ref in parsed.models:
            manifest = registry.resolve(ref.model_type, ref.timeframe, ref.version)
            if ref.role == "shadow":
                continue
            assert ref.role == "production", (name, ref)  # a canary publishes: none shipped
            assert evidence_problem(manifest) is None, (name, manifest.key)
            assert manifest.stage == "production", (name, manifest.key)


def test_production_requires_keys_and_autoscales():
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "production.yaml").read_text())
    parsed = parse_config(config["applications"][0]["args"])
    assert parsed.api.require_api_key and parsed.serving.autoscaling is not None
    assert {f.exchange for f in parsed.feeds} >= {"binance", "kraken"}
    served = {(m.model_type, m.timeframe) for m in parsed.models}
    # every model type and timeframe that has a production version (one beating its baseline)
    assert served == {
        (m.model_type, m.timeframe)
        for m in open_registry("models_onnx").manifests()
        if m.stage == "production"
    }
    assert {t for t, _ in served} == {"direction", "volatility", "return", "swing"}


def test_autoscaling_bounds_are_checked():
    with pytest.raises(ConfigError, match="max_replicas"):
        parse_config({"serving": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}})


def test_grafana_dashboard_charts_the_metrics_the_code_publishes():
    import json
    import re

    dashboard = json.loads(
        (PROJECT_ROOT / "configs" / "grafana" / "tickcast-dashboard.json").read_text()
    )
    charted = {
        m
        for p in dashboard["panels"]
        for t in p["targets"]
        for m in re.findall(r"ray_(tickcast_[a-z_]+?)(?:_bucket)?\b", t["expr"])
    }
    source = (PROJECT_ROOT / "orchestrator" / "actors" / "metrics.py").read_text()
    published = set(re.findall(r'"(tickcast_[a-z_]+)"', source))
    assert charted == published  # every published metric has a panel, and no panel is orphaned


def test_a_replay_without_its_files_falls_back_to_the_synthetic_market_when_asked(tmp_path):
    from orchestrator.config import feed_actors

    missing = {"kind": "replay", "path": str(tmp_path / "absent"), "speed": 3, "warmup_minutes": 5}
    ((_, feed),) = feed_actors(
        parse_config({"feeds": [{**missing, "fallback": "synthetic"}]}).feeds
    )
    assert isinstance(feed, SyntheticFeedConfig) and feed.speed == 3 and feed.warmup_minutes == 5
    ((_, kept),) = feed_actors(parse_config({"feeds": [missing]}).feeds)
    assert isinstance(kept, ReplayFeedConfig)  # no fallback: the feed fails loudly at start


@pytest.mark.parametrize(
    ("section", "key", "moved_to"),
    [
        ("features", "state_dir", "stream.state_dir"),
        ("features", "checkpoint_every", "stream.checkpoint_every"),
        ("features", "in_flight", "stream.in_flight"),
        ("sink", "outcome_window", "outcomes.window"),
    ],
)
def test_a_moved_field_says_where_it_lives_now(section, key, moved_to):
    with pytest.raises(ConfigError, match=rf"{section}\.{key} is now {moved_to}"):
        parse_config({section: {key: 3}})


def test_parse_config_takes_a_parsed_config_as_it_is():
    config = parse_config({"environment": "x"})
    assert parse_config(config) is config


def test_each_actor_gets_its_own_typed_settings():
    config = parse_config(
        {
            "environment": "prod",
            "feeds": [
                {"kind": "synthetic"},
                {
                    "kind": "ccxt",
                    "exchange": "binance",
                    "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"],
                    "symbols_per_actor": 2,
                },
            ],
            "features": {"shards": 3, "timeframes": ["1m", "5m"]},
            "stream": {"state_dir": "/tmp/state", "checkpoint_every": 7, "in_flight": 3},
            "outcomes": {"window": 50},
            "models": [{"model_type": "direction", "timeframe": "5m"}],
        }
    )
    feeds, shards = config.feed_settings(), config.shard_settings()
    assert [f.name for f in feeds] == ["synthetic-0", "ccxt-binance-1-0", "ccxt-binance-1-1"]
    assert {(f.run_dir, f.checkpoint_every, f.in_flight) for f in feeds} == {
        ("/tmp/state/prod", 7, 3)
    }
    assert feeds[2].source.symbols == ("SOL/USDT",)
    assert [(s.shard_id, s.n_shards) for s in shards] == [(0, 3), (1, 3), (2, 3)]
    assert {(s.outcomes.window, s.run_dir, s.environment) for s in shards} == {
        (50, "/tmp/state/prod", "prod")
    }
    assert shards[0].features.timeframes == ("1m", "5m")


def test_feed_symbol_lists_travel_apart_from_the_bound_config():
    from orchestrator.config import feed_symbol_lists, with_feed_symbols

    config = parse_config(
        {
            "feeds": [
                {"kind": "synthetic", "n_symbols": 2},
                {"kind": "replay", "path": "x"},
                {"kind": "ccxt", "exchange": "binance", "symbols": ["BTC/USDT", "ETH/USDT"]},
            ]
        }
    )
    lists = feed_symbol_lists(config)
    assert lists == [["SYN0000/USDT", "SYN0001/USDT"], None, ["BTC/USDT", "ETH/USDT"]]
    bound = with_feed_symbols(config, None)
    other = with_feed_symbols(
        parse_config(
            {
                **config.model_dump(),
                "feeds": [
                    {"kind": "synthetic", "symbols": ["A/USDT"]},
                    {"kind": "replay", "path": "x", "symbols": ["BTC/USDT"]},
                    {"kind": "ccxt", "exchange": "binance", "symbols": ["SOL/USDT"]},
                ],
            }
        ),
        None,
    )
    assert bound == other  # changing symbols never changes what the deployments are bound with
    restored = with_feed_symbols(bound, lists)
    assert feed_symbol_lists(restored) == lists
    assert [s.source.symbols for s in restored.feed_settings()][2] == ("BTC/USDT", "ETH/USDT")
    with pytest.raises(ConfigError, match="2 symbol lists for 3 feeds"):
        with_feed_symbols(bound, lists[:2])


def test_kafka_settings_come_from_the_environment_never_the_file(monkeypatch):
    from orchestrator.config import KafkaFeedConfig, parse_config

    monkeypatch.setenv("TICKCAST_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("TICKCAST_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    feed = KafkaFeedConfig(bootstrap_servers="k:9092", topics=("candles",))
    settings = feed.client_config({"group.id": "g"})
    assert settings["sasl.password"] == "s3cret" and settings["security.protocol"] == "SASL_SSL"
    assert settings["bootstrap.servers"] == "k:9092" and settings["group.id"] == "g"
    with pytest.raises(ConfigError, match="sasl_password"):  # not a config field
        parse_config(
            {
                "feeds": [
                    {
                        "kind": "kafka",
                        "bootstrap_servers": "k",
                        "topics": ["c"],
                        "sasl_password": "x",
                    }
                ]
            }
        )


def test_the_kafka_sink_is_named_after_the_environment():
    from orchestrator.config import parse_config

    config = parse_config(
        {"environment": "prod", "sink": {"kafka": {"bootstrap_servers": "k:9092"}}}
    )
    assert config.sink_settings().kafka.transactional_id == "tickcast-sink-prod"
    assert parse_config({}).sink_settings().kafka is None
