"""The one vocabulary every settings class validates with (TrainConfig, STDPSettings,
ConversionSettings), in the spirit of scikit-learn's `_parameter_constraints`: each class
writes a table of `Rule`s beside its fields, and `check_fields` checks every field's annotated
type and rule, raising a `SettingError` that names the field and says what it allows. Light
(standard library only), so the settings modules stay light too."""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

from deepstdp.runtime.util import SettingError


@dataclass(frozen=True)
class Rule:
    """Allowed values of one setting beyond its type: a closed or half-open range, or a set of
    choices. None passes wherever the field's type allows it (`X | None`)."""

    low: float = -math.inf
    high: float = math.inf
    high_open: bool = False
    low_open: bool = False
    choices: tuple[str, ...] = ()

    def holds(self, v: Any) -> bool:
        if self.choices:
            return v in self.choices
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return bool(above and below) and math.isfinite(v)

    def describe(self, integer: bool = False) -> str:
        """What the rule allows, as the error says it ('in [1, 64]', 'an integer >= 0')."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if math.isinf(self.high):
            kind = "an integer" if integer else "a finite number"
            if math.isinf(self.low):
                return kind
            return f"{kind} {'>' if self.low_open else '>='} {_num(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}")

    def __str__(self) -> str:
        return self.describe()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_fields(settings: Any, rules: dict[str, Rule]) -> None:
    """Check every field of the dataclass `settings` against its annotation and its rule (if
    any); raises SettingError naming the first bad field."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        check_value(f.name, getattr(settings, f.name), hints[f.name], rules.get(f.name))


def check_value(name: str, value: Any, hint: Any, rule: Rule | None) -> None:
    """One setting: of its annotated type (JSON files can hold anything; bool is not a
    number), and within its rule."""
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    base = typing.get_origin(base) or base
    if base is float:  # numbers.Real: numpy's scalars too (a grid search may hand them)
        typed = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif base is int:
        typed = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        typed = isinstance(value, base)
    if not typed:
        if rule is None or rule.choices:
            raise SettingError(name, f"must be of type {getattr(base, '__name__', base)}, got "
                                     f"{value!r}")
        what = rule.describe(base is int)
        if what.startswith("in "):
            what = f"{'an integer' if base is int else 'a number'} {what}"
        raise SettingError(name, f"must be {what}, got {value!r}")
    if rule is not None and not rule.holds(value):
        raise SettingError(name, f"must be {rule.describe(base is int)}, got {value!r}")
