"""How models are grouped into Serve deployments, and a group member's handle."""

import pickle

import pytest

from serve_app.model_group import ModelInGroup, ModelsInGroup, calls_per_tick, deployment_groups

KEYS = ["direction-1m", "volatility-1m", "direction-5m", "swing-1h"]


@pytest.mark.parametrize(
    ("grouping", "expected"),
    [
        ("none", {f"model-{k}": (k,) for k in KEYS}),
        (
            "timeframe",
            {
                "models-1m": ("direction-1m", "volatility-1m"),
                "models-5m": ("direction-5m",),
                "models-1h": ("swing-1h",),
            },
        ),
        ("all", {"models": tuple(KEYS)}),
    ],
)
def test_deployment_groups(grouping, expected):
    assert deployment_groups(KEYS, grouping) == expected


def test_an_unknown_grouping_is_refused():
    with pytest.raises(ValueError, match="unknown model grouping"):
        deployment_groups(KEYS, "type")


class _Method:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def remote(self, *args):
        self.calls.append((self.name, args))
        return "ref"


class _Handle:
    def __init__(self, deployment_name: str = "models"):
        self.calls = []
        self.app_name, self.deployment_name = "tickcast", deployment_name

    def __getattr__(self, name):
        return _Method(name, self.__dict__["calls"])


def test_a_group_member_calls_its_group_with_its_model_id():
    handle = _Handle()
    member = ModelInGroup(handle, "volatility-1m")
    assert member.predict.remote("rows") == "ref"
    member.predict_version.remote("rows", "v2")
    member.describe.remote()
    member.pid.remote()
    assert handle.calls == [
        ("predict_model", ("rows", "volatility-1m")),
        ("predict_version", ("rows", "v2", "volatility-1m")),
        ("describe", ("volatility-1m",)),
        ("pid", ()),
    ]
    assert pickle.loads(pickle.dumps(ModelInGroup("h", "swing-1h"))).key == "swing-1h"


def test_a_timeframes_models_in_one_group_are_one_call_per_tick():
    group, other, solo = _Handle("models-5m"), _Handle("models-5m-b"), _Handle("model-x")
    members = [
        ModelInGroup(group, "direction-5m"),
        solo,
        ModelInGroup(other, "swing-5m"),
        ModelInGroup(_Handle("models-5m"), "volatility-5m"),  # unpickled apart: same group
    ]
    calls = calls_per_tick(members)
    assert isinstance(calls[0], ModelsInGroup) and calls[0].keys == (
        "direction-5m",
        "volatility-5m",
    )
    assert calls[1] is solo and calls[2] is members[2]  # a group's only member stays as it was
    calls[0].predict.remote("rows")
    calls[0].describe.remote()
    assert group.calls == [
        ("predict_models", ("rows", ("direction-5m", "volatility-5m"))),
        ("describe", ("direction-5m",)),
    ]
