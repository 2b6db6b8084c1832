"""Schedulers: one small module per policy, all providing L{salvusctl.interfaces.IScheduler}.

L{makeScheduler} is the one table from config names to modules; a group's scheduler is made (and
can be remade live) from its name and options.
"""

from __future__ import annotations

import importlib
import random
from typing import Any

from salvusctl.errors import ConfigError
from salvusctl.interfaces import IScheduler

__all__ = ["SCHEDULERS", "makeScheduler"]

# config name -> "module:class"; each class takes (clock, rng, **options).
SCHEDULERS: dict[str, str] = {
    "roundrobin": "salvusctl.balancer.schedulers.roundrobin:RoundRobin",
    "leastconns": "salvusctl.balancer.schedulers.leastconns:LeastConns",
    "weighted": "salvusctl.balancer.schedulers.weighted:SmoothWeighted",
    "random2": "salvusctl.balancer.schedulers.twochoices:TwoChoices",
    "sticky": "salvusctl.balancer.schedulers.sticky:Sticky",
    "sourcehash": "salvusctl.balancer.schedulers.rendezvous:Rendezvous",
    "leastload": "salvusctl.balancer.schedulers.leastload:LeastLoad",
}


def makeScheduler(
    name: str, clock: Any = None, rng: random.Random | None = None, **options: Any
) -> IScheduler:
    """Make the scheduler a config names.

    @raise ConfigError: for an unknown name or options the scheduler does not take.
    """
    target = SCHEDULERS.get(name)
    if target is None:
        raise ConfigError(f"unknown scheduler {name!r} (known: {', '.join(sorted(SCHEDULERS))})")
    module, _, cls = target.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    try:
        return factory(clock=clock, rng=rng or random.Random(), **options)
    except TypeError as e:
        raise ConfigError(f"scheduler {name!r}: bad options {sorted(options)}: {e}")
