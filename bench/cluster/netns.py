"""Messages to connected clients across three real hosts in network namespaces: the figures.

Three C{twistd -n salvus} hosts, each in its own namespace, share one PostgreSQL (the layout is
L{tests.integration.threehosts}'s, the same as the test's): host c's app registers N clients;
host a, linked to c by a veth, sends over the TLS link; host b, with no route to c, by the
mailbox.  Printed: the time to register the clients, one message to every client at once
(deliver() of the first to the app's last line), p50/p99 of one message at a time on each path
(deliver() to the app's line; the mailbox is the anchor: the path the cluster had), and, after
C{kill -9} of c's twistd, how long until its clients are gone from the registry.

    python bench/cluster/netns.py [--clients 1000] [--samples 1000] [--quick]

Needs root (ip netns) and PostgreSQL ($SALVUS_TEST_POSTGRES, default
postgresql://postgres@127.0.0.1:5432/test): a throw-away database is made and dropped, and the
namespaces are removed at the end whatever happened.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000, help="messages one at a time, per path")
    parser.add_argument("--quick", action="store_true", help="100 clients, 50 samples (a check that it runs)")
    args = parser.parse_args(argv)
    clients, samples = (100, 50) if args.quick else (args.clients, min(args.samples, args.clients))
    from tests.integration.threehosts import HEARTBEAT, MISSED, USER, ThreeHosts, netnsUnavailable, percentile

    reason = netnsUnavailable()
    if reason is not None:
        print(f"bench/cluster/netns.py: network namespaces unavailable ({reason}): not run", file=sys.stderr)
        return 2
    os.environ.setdefault("SALVUS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    from salvusctl.admin.users import OPERATOR, UsersFile
    from tests.store.pgtemp import TempDatabase

    db = TempDatabase(os.environ["SALVUS_TEST_POSTGRES"]).create()
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="salvus-bench-netns-") as tmp:
            users = os.path.join(tmp, "admin-users")
            UsersFile(users).add(*USER, role=OPERATOR)
            hosts = ThreeHosts(db, tmp, clients)

            def run(reactor):
                from twisted.internet import defer

                @defer.inlineCallbacks
                def go():
                    try:
                        hosts.make()
                        hosts.start(users)
                        results.update((yield hosts.run(samples)))
                    finally:
                        yield hosts.close()

                return go()

            from twisted.internet import task

            try:
                task.react(run)
            except SystemExit as e:
                if e.code:
                    raise
    finally:
        db.drop()
    link, mailbox = results["link"], results["mailbox"]
    print(f"three twistd hosts in network namespaces, one PostgreSQL; {clients} clients on host c")
    print(f"{'path':<10} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'p50 vs mailbox':>15} {'messages':>9}")
    for label, values in (("link", link), ("mailbox", mailbox)):
        p50 = percentile(values, 50)
        print(f"{label:<10} {p50 * 1000:8.2f} {percentile(values, 99) * 1000:8.2f} {max(values) * 1000:8.2f}"
              f" {p50 / percentile(mailbox, 50):15.2f} {len(values):9d}")
    print(f"{'event':<44} {'seconds':>8}")
    print(f"{f'{clients} clients registered (connect to row)':<44} {results['registered']:8.2f}")
    print(f"{f'one message to each of {clients} at once (link)':<44} {results['burst']:8.2f}")
    print(f"{'kill -9 of c -> its clients gone':<44} {results['gone']:8.2f}"
          f"   (missed x heartbeat = {MISSED * HEARTBEAT:g}s)")
    once = results["burst_once"] and results["link_once"] and results["mailbox_once"]
    print(f"paths: burst {results['burst_paths']}, link {results['link_paths']},"
          f" mailbox {results['mailbox_paths']}; once each: {once}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
