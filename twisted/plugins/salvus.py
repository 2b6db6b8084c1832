"""The twistd dropin: C{twistd -n salvus}.  Everything lives in L{salvusctl.tap}."""

from twisted.application.service import ServiceMaker

salvus = ServiceMaker(
    "Salvus",
    "salvusctl.tap",
    "Balancer, supervisor, monitor, alerts and admin for one host, from its .tac file.",
    "salvus",
)
