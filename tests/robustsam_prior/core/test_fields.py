from dataclasses import MISSING, dataclass, fields

import pytest

from robustsam_prior.core.fields import option_field, required_option_field


@dataclass(frozen=True)
class Inner:
    n: int = option_field(1, "a number", min=0)


@dataclass(frozen=True)
class Outer:
    size: int = required_option_field("side in pixels", min=1)
    name: str = option_field("x", "a name")
    kwargs: dict = option_field(dict, "keyword arguments")
    items: list = option_field(list, "items")
    inner: Inner = option_field(Inner, "nested options")
    pair: tuple = option_field((1, 2), "a pair")


def test_metadata_holds_help_and_the_validator_keywords():
    meta = {f.name: dict(f.metadata) for f in fields(Outer)}
    assert meta["size"] == {"help": "side in pixels", "min": 1}
    assert meta["name"] == {"help": "a name"}
    assert dict(fields(Inner)[0].metadata) == {"help": "a number", "min": 0}


def test_a_class_default_is_a_fresh_instance_each_time():
    a, b = Outer(size=1), Outer(size=2)
    assert a.kwargs == {} and a.items == [] and a.inner == Inner() and a.pair == (1, 2)
    assert a.kwargs is not b.kwargs and a.items is not b.items and a.inner is not b.inner
    assert {f.name: f.default for f in fields(Outer)}["size"] is MISSING
    with pytest.raises(TypeError):
        Outer()  # the required option has no default
