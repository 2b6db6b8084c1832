"""Several hosts sharing one PostgreSQL store: membership, messages and balancing across hosts.

A host joins by declaring C{Cluster(...)} (see L{salvusctl.cluster.declare}); docs/cluster.md
explains what is guaranteed.
"""

from salvusctl.cluster.declare import Cluster

__all__ = ["Cluster"]
