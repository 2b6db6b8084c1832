"""Messages to 1,000 connected clients across three real hosts in network namespaces.

Three C{twistd -n salvus} hosts share the real PostgreSQL (L{tests.integration.threehosts} has
the layout): C{a} delivers to C{c}'s clients over the TLS link between their namespaces, C{b},
which has no route to C{c}, by the mailbox.  Checked: all 1,000 clients get a burst within a
bound, once each; each path's latency; and after C{kill -9} of C{c}'s twistd its clients leave
the registry within the cluster's C{missed x heartbeat} (plus a peer's next look).
C{bench/cluster/netns.py} prints the same figures as a table.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from salvusctl.admin.users import OPERATOR, UsersFile
from tests.integration.threehosts import HEARTBEAT, MISSED, USER, ThreeHosts, netnsUnavailable, percentile
from tests.store.pgtemp import POSTGRES_SKIP, TempDatabase

CLIENTS = 1000
SAMPLES = 200

_reason = netnsUnavailable()


class ThreeHostsClientsTests(TestCase):
    skip = POSTGRES_SKIP or (
        f"!!! network namespaces unavailable ({_reason}): the three-host test DID NOT RUN !!!"
        if _reason else None)
    timeout = 60

    @defer.inlineCallbacks
    def test_thousandClientsBothPathsAndAKilledHost(self):
        db = TempDatabase().create()
        self.addCleanup(db.drop)
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        users = os.path.join(tmp, "admin-users")
        UsersFile(users).add(*USER, role=OPERATOR)
        hosts = ThreeHosts(db, tmp, CLIENTS)
        self.addCleanup(hosts.close)  # runs before the database is dropped
        hosts.make()
        hosts.start(users)
        figures = yield hosts.run(SAMPLES)
        print(f"\nregistered {CLIENTS} in {figures['registered']:.2f}s;"
              f" burst to all {figures['burst']:.2f}s;"
              f" link p50/p99 {percentile(figures['link'], 50) * 1000:.2f}/"
              f"{percentile(figures['link'], 99) * 1000:.2f} ms; mailbox p50/p99"
              f" {percentile(figures['mailbox'], 50) * 1000:.2f}/"
              f"{percentile(figures['mailbox'], 99) * 1000:.2f}"
              f" ms; gone {figures['gone']:.2f}s after kill -9")
        # 1,000 clients, one message each, all at once over the link: once each, in bounded time.
        self.assertEqual(figures["burst_paths"], {"link": CLIENTS})
        self.assertTrue(figures["burst_once"])
        self.assertLess(figures["burst"], 10.0)
        # one at a time: a by the link, b (no route to c) by the mailbox; each once
        self.assertEqual(figures["link_paths"], {"link": SAMPLES})
        self.assertEqual(figures["mailbox_paths"], {"mailbox": SAMPLES})
        self.assertTrue(figures["link_once"] and figures["mailbox_once"])
        self.assertLess(percentile(figures["link"], 50), percentile(figures["mailbox"], 50))
        self.assertLess(percentile(figures["link"], 99), 0.5)
        self.assertLess(percentile(figures["mailbox"], 99), 2.0)
        # kill -9: gone within missed x heartbeat after c's last beat, plus a peer's next look
        # (and a heartbeat's slack for a loaded machine)
        self.assertLess(figures["gone"], MISSED * HEARTBEAT + 2 * HEARTBEAT + 0.5)
        self.assertEqual(figures["gone_why"], ["its host c is down"])
