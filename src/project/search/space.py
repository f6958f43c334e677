"""A search space written in Hydra's sweep syntax (`conf/hparams_search/*.yaml`, key `params`), as Optuna
distributions, and a trial's sampled values as Hydra overrides.

    model.optimizer.lr: tag(log, interval(1e-4, 3e-2))   # float, log scale
    model.net.width: choice(8, 16, 32)                   # categorical
    trainer.max_epochs: range(2, 8, 2)                   # int with step (2, 4, 6: Python's range)
    data.batch_size: tag(int, interval(16, 128))         # int
    model: choice(digits_cnn, digits_tiny)               # a config group option
    trainer.gradient_clip_val: 1.0                       # no sweep: a fixed override for every trial

The same syntax as the Hydra Optuna sweeper plugin, so its search files carry over.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

_PLAIN = re.compile(r"^[\w.\-+/:]+$")


def distribution(override: Override) -> BaseDistribution:
    """One sweep override → the Optuna distribution it describes."""
    value = override.value()
    tags = set(getattr(value, "tags", ()) or ())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: empty range")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(int(value.step or 1)))
        return FloatDistribution(min(values), max(values), step=abs(float(value.step)))
    if isinstance(value, IntervalSweep):
        low, high, log = value.start, value.end, "log" in tags
        if "int" in tags:
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ValueError(f"{override.input_line}: unsupported sweep (use choice, range, interval, tag(log|int, ...))")


def format_value(value: Any) -> str:
    """A sampled value as override text Hydra reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return text if _PLAIN.match(text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution]
    fixed: list[str]

    @classmethod
    def from_config(cls, params: Mapping[str, Any] | None) -> SearchSpace:
        if not params:
            raise ValueError("the search space is empty: set hparams_search.params")
        parser = OverridesParser.create()
        distributions: dict[str, BaseDistribution] = {}
        fixed: list[str] = []
        for key, spec in params.items():
            text = spec if isinstance(spec, str) else format_value(spec) if not isinstance(spec, list | tuple) else spec
            override = parser.parse_override(f"{key}={text}")
            if override.is_sweep_override():
                distributions[str(key)] = distribution(override)
            else:
                fixed.append(f"{key}={override.get_value_element_as_str()}")
        return cls(distributions, fixed)

    def suggest(self, trial: optuna.Trial) -> list[str]:
        """Sample every parameter for `trial` (enqueued values are taken as given) → Hydra overrides."""
        overrides = list(self.fixed)
        for key, dist in self.distributions.items():
            value = _suggest(trial, key, dist)
            overrides.append(f"{key}={format_value(value)}")
        return overrides


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")
