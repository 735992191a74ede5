"""Sweeps: a grid of parameter values expanded into instances, with IDs that never move.

An experiment may declare, beside `experiment`:

    sweep = {'regularization_lambda': [0.0, 0.001, 0.01], 'layer_type': ['conv', 'multi']}

which expands every instance into the cartesian product of the values, or per instance:

    sweep = {}
    sweep[1] = ['regularization_lambda=[0.0, 0.001, 0.01]', 'layer_type=["conv", "multi"]']
    sweep[3] = {'learning_rate': [0.01, 0.001]}

(the list-of-strings style of `experiment`, or a dict). A name-keyed entry applies to every
instance; an ID-keyed one to that instance only (its names win over the shared ones).

The IDs of the combinations come from the positions of the values in their lists: instance N swept
over p parameters gives N, then two digits per parameter, each the value's position from 01:
`sweep[1]` above gives 10101 (0.0, "conv"), 10102 (0.0, "multi"), 10201 (0.001, "conv")...
Appending a value to a list therefore adds IDs and never renumbers the combinations already run,
whose saved folds are kept and skipped. (Inserting or reordering values does renumber them; the
run then refuses to mix results, naming the parameter that changed.)

`comment_1` and `comment_2` may be omitted in a swept instance: comment_1 then names the base
instance and comment_2 the swept values of the combination.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from . import params as P
from .errors import ParameterError

MAX_VALUES = 99  # two digits per swept parameter in the IDs


def parse_sweep(spec: Any, where: str) -> tuple[dict[str, list], dict[int, dict[str, list]]]:
    """(shared grid, {instance: grid}) from a `sweep` setting; every grid is {name: [values]}."""
    if not isinstance(spec, Mapping):
        raise ParameterError(f"{where}: sweep should be a dict, like sweep = {{'learning_rate': [0.01, 0.001]}}")
    shared = {k: v for k, v in spec.items() if isinstance(k, str)}
    per_instance = {k: v for k, v in spec.items() if not isinstance(k, str)}
    for key in per_instance:
        if not isinstance(key, int) or isinstance(key, bool):
            raise ParameterError(f"{where}: sweep key {key!r} should be a parameter name or an instance ID (int)")
    grids = {key: _grid(value, f"{where}[{key}]") for key, value in per_instance.items()}
    return _grid(shared, where) if shared else {}, grids


def _grid(spec: Any, where: str) -> dict[str, list]:
    values = P.parse_instance(spec, where)
    for name, options in values.items():
        if not isinstance(options, (list, tuple)) or not options:
            raise ParameterError(f"{where}: {name} should list the values to sweep, like {name}=[1, 2], "
                                 f"got {options!r}")
        if len(options) > MAX_VALUES:
            raise ParameterError(f"{where}: {name} sweeps {len(options)} values; at most {MAX_VALUES}")
        reprs = [repr(v) for v in options]
        if len(set(reprs)) != len(reprs):
            raise ParameterError(f"{where}: {name} lists a value twice")
    return {name: list(options) for name, options in values.items()}


def combination_id(base: int, positions: tuple[int, ...]) -> int:
    """Instance `base` with the values at 0-based `positions`: base, then two digits per position + 1.

    >>> combination_id(1, (0, 1)), combination_id(12, (2,))
    (10102, 1203)
    """
    number = base
    for position in positions:
        number = number * 100 + position + 1
    return number


def expand(instances: dict[int, dict[str, Any]], sweep: Any, where: str) -> tuple[dict[int, dict[str, Any]],
                                                                                  dict[int, list[str]]]:
    """Expand the swept instances; returns (instances, {new ID: the swept parameter names})."""
    shared, per_instance = parse_sweep(sweep, f"{where}: sweep")
    unknown = sorted(set(per_instance) - set(instances))
    if unknown:
        raise ParameterError(f"{where}: sweep[{unknown[0]}] names no instance of the experiment dict")
    out: dict[int, dict[str, Any]] = {}
    swept: dict[int, list[str]] = {}
    origin: dict[int, int] = {}
    for base, params in instances.items():
        grid = {**shared, **per_instance.get(base, {})}
        if not grid:
            _add(out, origin, base, base, params, where)
            continue
        names = list(grid)
        clash = [n for n in names if n in params]
        if clash:
            raise ParameterError(f"{where}: instance {base} sets {clash[0]!r}, which its sweep also sets; "
                                 "remove one of them")
        for positions in itertools.product(*(range(len(grid[n])) for n in names)):
            values = {n: grid[n][i] for n, i in zip(names, positions)}
            combo = {**params, **values}
            combo.setdefault("comment_1", f"sweep of instance {base}")
            combo.setdefault("comment_2", swept_values(combo, names))
            new_id = combination_id(base, positions)
            _add(out, origin, new_id, base, combo, where)
            swept[new_id] = names
    return dict(sorted(out.items())), swept


def swept_values(params: dict[str, Any], names: list[str]) -> str:
    """What sets a combination apart: "learning_rate=0.01, layer_type='conv'"."""
    return ", ".join(f"{name}={params[name]!r}" for name in names)


def _add(out: dict, origin: dict, new_id: int, base: int, params: dict, where: str) -> None:
    if new_id in out:
        raise ParameterError(f"{where}: instance ID {new_id} comes from both instance {origin[new_id]} and "
                             f"instance {base}'s sweep; renumber instance {min(base, origin[new_id])}")
    out[new_id], origin[new_id] = params, base
