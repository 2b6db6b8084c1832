"""Wiring of a host's clients hub into its cluster member (one small hook in the service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from salvusctl.cluster.clienthub import MESSAGE_KIND, ClientHub
from salvusctl.cluster.clients import ClientRegistry

__all__ = ["attachClients", "supervisorIdentify"]


def attachClients(cluster: Any, socket_name: str, identify: Callable[[int], str | None] | None,
                  migrate: bool = True, links: bool | dict[str, Any] | None = None) -> ClientHub:
    """A L{ClientHub} for C{cluster}: its mailbox carries C{client.message}, its membership
    tells the hub which hosts went (their clients go with them).

    @param links: direct links to the other hosts: True, or the options of L{Links} (port, idle,
        timeout); None: when the store is shared (PostgreSQL); False: the mailbox only.
    """
    registry = ClientRegistry(cluster.store, migrate=migrate)
    if links is None:
        links = cluster.store.sql.shared
    made = None
    if links is True or isinstance(links, dict):
        from salvusctl.cluster.links import Links, LinkTable

        options = links if isinstance(links, dict) else {}
        made = Links(cluster.reactor, LinkTable(cluster.store), cluster.host_name, cluster.address, **options)
    hub = ClientHub(cluster.reactor, registry, cluster.host_name, socket_name, cluster.mailbox.send,
                    identify=identify, links=made)
    if made is not None:
        made.hub = hub
    cluster.mailbox.addHandler(MESSAGE_KIND, hub.handleMailbox)
    cluster.membership.addObserver(hub.hostChanged)
    return hub


def supervisorIdentify(supervisor: Any) -> Callable[[int], str | None]:
    """C{identify(pid)} through the supervisor: the instance a process belongs to, else None."""

    def identify(pid: int) -> str | None:
        instance = supervisor._instanceOfPid(pid) if pid else None
        return instance.name if instance is not None else None

    return identify
