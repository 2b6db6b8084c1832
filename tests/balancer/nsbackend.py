"""A backend for L{tests.balancer.netns}: C{python -m tests.balancer.nsbackend ADDRESS PORT NAME}.

Answers each connection's first bytes with C{NAME:bytes} and closes; prints one line once it
listens.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol


class Answer(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.factory.name + b":" + data)
        self.transport.loseConnection()


def main(address: str, port: str, name: str) -> None:
    factory = Factory.forProtocol(Answer)
    factory.noisy = False
    factory.name = name.encode()
    reactor.listenTCP(int(port), factory, backlog=1024, interface=address)
    reactor.callWhenRunning(lambda: (sys.stdout.write("listening\n"), sys.stdout.flush()))
    reactor.run()


if __name__ == "__main__":
    main(*sys.argv[1:4])
