"""The cluster's tables, as versioned migrations for both stores.

- C{cluster_hosts}: one row per member host (its own heartbeat writes it).
- C{cluster_messages}: one row per message, C{recipient} a host name or C{'*'} (every host).
- C{cluster_deliveries}: one row per message and receiving host — written when the receiver
  claims the message (C{delivered}) and updated when its handler finished (C{acked} / C{failed}).
  A broadcast has one row per host that received it, so "once per receiver" is a primary key.
- C{cluster_instances}: the ready deploy instances each host publishes for other hosts'
  balancers.
"""

from __future__ import annotations

from salvusctl.store.migrations import Migration

__all__ = ["MIGRATIONS", "CHANNEL_MESSAGES", "CHANNEL_HOSTS", "BROADCAST"]

#: NOTIFY channel: a message was queued; the payload is its recipient (a host name or C{'*'}).
CHANNEL_MESSAGES = "salvus_cluster_messages"
#: NOTIFY channel: a host joined, left or changed what it publishes; the payload is its name.
CHANNEL_HOSTS = "salvus_cluster_hosts"
#: The recipient of a message for every host of the cluster.
BROADCAST = "*"

_COMMON = """
CREATE TABLE cluster_hosts (
    name TEXT PRIMARY KEY,
    address TEXT,
    admin_url TEXT,
    started DOUBLE PRECISION,
    last_seen DOUBLE PRECISION NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL,
    missed INTEGER NOT NULL,
    version TEXT,
    state TEXT NOT NULL,
    since_message BIGINT NOT NULL DEFAULT 0
);
{messages}
CREATE INDEX cluster_messages_recipient ON cluster_messages (recipient, id);
CREATE INDEX cluster_messages_created ON cluster_messages (created);
CREATE TABLE cluster_deliveries (
    message_id BIGINT NOT NULL REFERENCES cluster_messages (id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    claimer TEXT NOT NULL,
    delivered DOUBLE PRECISION NOT NULL,
    done DOUBLE PRECISION,
    result TEXT,
    PRIMARY KEY (message_id, host)
);
CREATE TABLE cluster_instances (
    host TEXT NOT NULL,
    instance TEXT NOT NULL,
    deploy TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    state TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, instance)
);
CREATE INDEX cluster_instances_deploy ON cluster_instances (deploy, host);
"""

_MESSAGES = """
CREATE TABLE cluster_messages (
    id {id},
    uid TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    reply_to TEXT
);"""

MIGRATIONS = [
    Migration(
        1,
        "cluster hosts, messages, deliveries and published instances",
        lambda sql: _COMMON.format(messages=_MESSAGES.format(id=sql.serialKey)),
    ),
]
