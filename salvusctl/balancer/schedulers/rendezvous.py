"""Source-IP affinity without a cache: weighted rendezvous (highest random weight) hashing.

Every (client IP, host) pair gets a pseudo-random score; the client goes to the host with the best
score.  Adding or removing a host moves only the clients whose best score was (or becomes) that
host — about 1/n of them — and every balancer with the same host list agrees without sharing
state.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from zope.interface import implementer

from salvusctl.balancer.schedulers.sticky import _ip
from salvusctl.interfaces import IScheduler

__all__ = ["Rendezvous"]

_SCALE = float(1 << 64)


@implementer(IScheduler)
class Rendezvous:
    """Weighted rendezvous hashing on the client's IP (C{score = -w / ln(u)})."""

    name = "sourcehash"

    def __init__(self, clock: Any = None, rng: Any = None):
        pass

    def choose(self, hosts, client_address):
        if not hosts:
            return None
        key = _ip(client_address).encode()
        best = None
        best_score = -1.0
        for h in hosts:
            digest = hashlib.blake2b(key + b"|" + h.name.encode(), digest_size=8).digest()
            u = (int.from_bytes(digest, "big") + 0.5) / _SCALE
            score = -h.weight / math.log(u)
            if score > best_score:
                best, best_score = h, score
        return best

    def hostsChanged(self, hosts):
        pass
