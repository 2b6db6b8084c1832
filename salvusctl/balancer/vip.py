"""A floating address shared by two front-ends, moved by keepalived (VRRP), never by Salvus.

C{Vip(...)} is a declaration that returns a supervised L{Deploy}: keepalived in the foreground,
with a config Salvus templates into the deploy's run directory.  Its track script
(L{salvusctl.balancer.vipcheck}) asks the local balancer whether it accepts connections; when it
does not, keepalived gives the address up and the peer with the next priority takes it.

Declared on each front-end with its own C{priority} and the other's address in C{peers}:

    host.add(Vip("10.0.0.100/24", interface="eth0", peers=["10.0.0.12"], priority=150,
                 check=["127.0.0.1:8080"]))
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Sequence

from salvusctl.balancer import vipcheck
from salvusctl.errors import ConfigError
from salvusctl.supervisor.deploy import Deploy

__all__ = ["Vip", "keepalivedConfig"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def keepalivedConfig(address: str, interface: str, peers: Sequence[str], priority: int,
                     check: Sequence[str], router_id: int = 51, advert_int: float = 1.0,
                     check_interval: float = 1.0, fall: int = 1, rise: int = 2,
                     preempt: bool = False, name: str = "vip", python: str | None = None,
                     source: str | None = None) -> str:
    """The keepalived.conf text for one floating address; raises L{ConfigError} on bad input.

    C{preempt=False} (keepalived's C{nopreempt}): a front-end that comes back does not take the
    address back from the one holding it, so a recovery moves nothing (no flap).
    """
    _validate(address, interface, peers, priority, check, router_id, advert_int, check_interval,
              fall, rise, name, source)
    # the file itself, without site or the salvusctl package: a check started every second on a
    # loaded host must take milliseconds, not the second importing Twisted takes
    script = " ".join([python or sys.executable, "-I", "-S", vipcheck.__file__,
                       "--timeout", f"{min(check_interval, 1.0):g}", *check])
    lines = [
        "# written by Salvus from a Vip(...) declaration; edits are lost at the next start",
        "global_defs {",
        f"    router_id salvus_{name}",
        "    script_user root",
        "}",
        "vrrp_script salvus_balancer {",
        f'    script "{script}"',
        f"    interval {check_interval:g}",
        f"    timeout {max(1, int(check_interval + 0.999)) + 1}",
        f"    fall {fall}",
        f"    rise {rise}",
        "}",
        f"vrrp_instance salvus_{name} {{",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {router_id}",
        f"    priority {priority}",
        f"    advert_int {advert_int:g}",
    ]
    if not preempt:
        lines.append("    nopreempt")
    if source:
        lines.append(f"    unicast_src_ip {source}")
    lines.append("    unicast_peer {")
    lines += [f"        {p}" for p in peers]
    lines += [
        "    }",
        "    virtual_ipaddress {",
        f"        {address} dev {interface}",
        "    }",
        "    track_script {",
        "        salvus_balancer",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _validate(address, interface, peers, priority, check, router_id, advert_int, check_interval,
              fall, rise, name, source) -> None:
    try:
        ipaddress.ip_interface(address)
    except ValueError:
        raise ConfigError(f"Vip address must be an address with its prefix (10.0.0.100/24), not {address!r}")
    if "/" not in str(address):
        raise ConfigError(f"Vip address {address!r} needs its prefix length (10.0.0.100/24)")
    if not isinstance(interface, str) or not re.match(r"^[A-Za-z0-9_.@-]{1,15}$", interface):
        raise ConfigError(f"Vip interface must be an interface name (eth0), not {interface!r}")
    if isinstance(peers, str) or not peers:
        raise ConfigError("Vip peers must be a list of the other front-ends' addresses")
    for p in list(peers) + ([source] if source else []):
        try:
            ipaddress.ip_address(p)
        except ValueError:
            raise ConfigError(f"Vip peer {p!r} is not an IP address")
    if not isinstance(priority, int) or not 1 <= priority <= 254:
        raise ConfigError(f"Vip priority must be an int from 1 to 254, not {priority!r}")
    if not isinstance(router_id, int) or not 1 <= router_id <= 255:
        raise ConfigError(f"Vip router_id must be an int from 1 to 255, not {router_id!r}")
    if isinstance(check, str) or not check:
        raise ConfigError("Vip check must be a list of HOST:PORT the local balancer listens on")
    for c in check:
        host, sep, port = str(c).rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"Vip check {c!r} is not HOST:PORT")
    if advert_int <= 0:
        raise ConfigError("Vip advert_int must be > 0")
    if check_interval != int(check_interval) or check_interval < 1:
        # keepalived reads a script interval in whole seconds and ignores any other
        raise ConfigError("Vip check_interval must be a whole number of seconds >= 1, "
                          f"not {check_interval!r}")
    if fall < 1 or rise < 1:
        raise ConfigError("Vip fall and rise must be >= 1")
    if not _NAME.match(name):
        raise ConfigError(f"Vip name must be letters, digits, '_', '.', '-', not {name!r}")


def Vip(address: str, interface: str, peers: Sequence[str], priority: int = 100,
        check: Sequence[str] = ("127.0.0.1:8080",), router_id: int = 51, advert_int: float = 1.0,
        check_interval: float = 1.0, fall: int = 1, rise: int = 2, preempt: bool = False,
        name: str = "vip", source: str | None = None, keepalived: str = "keepalived") -> Deploy:
    """A floating address as a supervised keepalived deploy named C{name} (see the module doc)."""
    text = keepalivedConfig(address, interface, peers, priority, check, router_id,
                            advert_int, check_interval, fall, rise, preempt, name, source=source)
    return Deploy(
        name=name,
        command=[keepalived, "--dont-fork", "--log-console", "--vrrp", "--use-file",
                 "{run_dir}/keepalived.conf", "--pid", "{run_dir}/keepalived.pid",
                 "--vrrp_pid", "{run_dir}/vrrp.pid"],
        templates={"keepalived.conf": text},
        autorestart="always",
        startsecs=1.0,
        stopsignal="TERM",
        stopwaitsecs=5.0,
        # keepalived's VRRP child must not outlive Salvus holding the address
        deathsig="TERM",
        redirect_stderr=True,
    )
