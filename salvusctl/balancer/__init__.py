"""Salvus balancer: an L4 TCP load balancer as a Twisted service.

The declarations a host's C{.tac} uses are re-exported here; see C{docs/balancer.md}.
"""

from salvusctl.balancer.declare import AgentCheck, Balanced, Group, HealthCheck, Server

__all__ = ["Balanced", "Group", "Server", "HealthCheck", "AgentCheck"]
