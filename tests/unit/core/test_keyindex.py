"""KeyIndex: slots in order of first appearance, the same from numpy or Arrow input."""

import numpy as np
import pyarrow as pa

from orchestrator.stream.keyindex import KeyIndex


def test_slots_follow_first_appearance_and_stay_stable():
    index = KeyIndex(":")
    first = index.slots(
        np.array(["b", "a", "b"], dtype=object),
        np.array(["X/USDT", "Y/USDT", "X/USDT"], dtype=object),
    )
    assert first.tolist() == [0, 1, 0] and index.keys == ["b:X/USDT", "a:Y/USDT"]
    again = index.slots(
        pa.array(["a", "c", "b"]), pa.chunked_array([pa.array(["Y/USDT", "Z/USDT:USDT", "X/USDT"])])
    )
    assert again.tolist() == [1, 2, 0] and len(index) == 3


def test_split_keeps_the_separator_inside_the_last_part():
    index = KeyIndex(":", ["binance:BTC/USDT:USDT", "x:A/B"])
    exchange, symbol = index.split(2)
    assert exchange.tolist() == ["binance", "x"] and symbol.tolist() == ["BTC/USDT:USDT", "A/B"]
    assert index.slots(["x"], ["A/B"]).tolist() == [1]


def test_dropped_keys_leave_the_others_in_order_and_come_back_as_new():
    index = KeyIndex(":", ["x:A", "x:B", "x:C", "x:D"])
    index.drop_slots([2, 0])
    assert index.keys == ["x:B", "x:D"] and (index.find("x:D"), index.find("x:A")) == (1, None)
    assert index.slots(["x", "x"], ["A", "D"]).tolist() == [2, 1]
    index.drop_slots([0, 1, 2])
    assert len(index) == 0 and index.slots(["x"], ["B"]).tolist() == [0]
