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
