"""The one registry pattern: specs by name, explicit registration, a temporary entry for tests."""

from dataclasses import dataclass

import pytest

from metazoo.errors import ConfigError
from metazoo.registry import Registry


@dataclass(frozen=True)
class Spec:
    name: str
    value: int = 0


def test_add_get_names_and_order():
    reg: Registry[Spec] = Registry("widget", "metazoo list widgets")
    for name in ("b", "a", "c"):
        reg.add(Spec(name))
    assert reg.names() == ["a", "b", "c"]  # sorted
    assert [s.name for s in reg] == ["b", "a", "c"]  # registration order
    assert reg.get("a") == Spec("a") and "a" in reg and "z" not in reg and len(reg) == 3
    with pytest.raises(RuntimeError, match="registered twice"):
        reg.add(Spec("a", 1))
    with pytest.raises(ConfigError, match=r"unknown widget 'bb'; did you mean 'b'.*list widgets"):
        reg.get("bb")


def test_temporarily_adds_then_removes_even_after_an_error():
    reg: Registry[Spec] = Registry("widget", "metazoo list widgets")
    reg.add(Spec("kept"))
    with reg.temporarily(Spec("tmp", 7)) as spec:
        assert spec.value == 7 and reg.get("tmp") is spec and len(reg) == 2
    assert "tmp" not in reg and reg.names() == ["kept"]
    with pytest.raises(KeyError), reg.temporarily(Spec("tmp")):
        raise KeyError("boom")
    assert "tmp" not in reg
    with pytest.raises(RuntimeError, match="twice"), reg.temporarily(Spec("kept")):
        pass
    assert reg.get("kept") == Spec("kept")  # a refused temporary entry removes nothing


def test_a_backbone_with_torch_running_statistics_is_warned_about_once():
    import warnings

    import pytest
    from torch import nn

    from metazoo.algorithms import build
    from metazoo.algorithms import registry as reg
    from metazoo.models import Conv4

    class UserNet(nn.Module):
        feature_dim = 4

        def __init__(self, track: bool = True) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(
                4, track_running_stats=track), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            return self.body(x)

    reg._WARNED.discard("BatchNorm2d")
    with pytest.warns(UserWarning, match="BatchNorm2d keeps running statistics"):
        build("protonet", UserNet(), ways=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("protonet", UserNet(), ways=5)  # once only
        reg._WARNED.discard("BatchNorm2d")
        build("protonet", UserNet(track=False), ways=5)  # follows the rule: no warning
        build("protonet", Conv4(hidden=8), ways=5)  # the library's own batch norm
