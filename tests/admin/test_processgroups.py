"""supervisord's process groups over deploys: reread's lists and what add / remove apply."""

from __future__ import annotations

import sys
from xmlrpc.client import Fault

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.faults import Faults
from salvusctl.admin.processgroups import groupDiff, withGroup, withoutGroup
from salvusctl.host import Host
from salvusctl.host.model import Declared, describe
from salvusctl.supervisor.deploy import Deploy
from tests.admin.helpers import HarnessTestCase

CMD = [sys.executable, "-c", "pass"]


def _running(*deploys):
    return {d.name: d for d in deploys}


def _model(*deploys):
    """The deploys as a child process's model gives them."""
    host = Host("h", store="sqlite:/tmp/x.db", var="/tmp/x")
    for deploy in deploys:
        host.add(deploy)
    return [Declared(e) for e in describe(host)["declarations"]]


class GroupDiffTests(SynchronousTestCase):
    def test_groupsAreDeploysByDefault(self):
        """Without group=, a group is its deploy: the lists are deployDiff's."""
        running = _running(Deploy("keep", command=CMD), Deploy("change", command=CMD),
                           Deploy("gone", command=CMD))
        declared = _model(Deploy("keep", command=CMD, priority=3), Deploy("change", command=CMD, numprocs=2),
                          Deploy("new", command=CMD))
        self.assertEqual(groupDiff(running, declared), [["new"], ["change"], ["gone"]])
        self.assertEqual(groupDiff(running, list(running.values())), [[], [], []])

    def test_aGroupOfSeveralDeploys(self):
        """A group changes when a deploy joins, leaves or changes; the others do not."""
        running = _running(Deploy("a", command=CMD, group="g"), Deploy("b", command=CMD, group="g"),
                           Deploy("c", command=CMD))
        left = _model(Deploy("a", command=CMD, group="g"), Deploy("c", command=CMD))
        self.assertEqual(groupDiff(running, left), [[], ["g"], []])
        self.assertEqual(groupDiff(running, _model(Deploy("a", command=CMD, group="g"),
                                                   Deploy("b", command=CMD, group="g", env={"X": "1"}),
                                                   Deploy("c", command=CMD))),
                         [[], ["g"], []])
        other = _model(Deploy("c", command=CMD), Deploy("d", command=CMD, group="h"))
        self.assertEqual(groupDiff(running, other), [["h"], [], ["g"]])


class AddRemoveTests(SynchronousTestCase):
    def setUp(self):
        self.running = _running(Deploy("keep", command=CMD), Deploy("gone", command=CMD))

    def fault(self, code, fn, *args):
        with self.assertRaises(Fault) as caught:
            fn(*args)
        self.assertEqual(caught.exception.faultCode, code, caught.exception.faultString)
        return caught.exception.faultString

    def test_add(self):
        """The running deploys, untouched, plus the group's declared ones; supervisord's faults
        for a name the config lacks and for a group that runs."""
        new = Deploy("new", command=CMD)
        declared = [Deploy("keep", command=CMD, env={"X": "2"}), new]
        deploys = withGroup(self.running, declared, "new")
        self.assertEqual(deploys, [self.running["keep"], self.running["gone"], new])
        self.assertIs(deploys[0], self.running["keep"])  # not the edited one: update changes it
        self.fault(Faults.BAD_NAME, withGroup, self.running, declared, "nope")
        self.fault(Faults.BAD_NAME, withGroup, self.running, declared, "gone")  # not in the config
        self.fault(Faults.ALREADY_ADDED, withGroup, self.running, declared, "keep")

    def test_addNeedsItsDependencies(self):
        """A group whose deploy depends on one that does not run is refused with a clear fault."""
        declared = [Deploy("api", command=CMD, depends_on=["db"]), Deploy("db", command=CMD)]
        text = self.fault(Faults.FAILED, withGroup, self.running, declared, "api")
        self.assertIn("depends on db, which does not run", text)

    def test_aMovedDeployIsRefused(self):
        declared = [Deploy("gone", command=CMD, group="other")]
        text = self.fault(Faults.FAILED, withGroup, self.running, declared, "other")
        self.assertIn("still runs in group 'gone'", text)

    def test_remove(self):
        """Only a stopped group goes: STILL_RUNNING while any instance is not stopped."""
        for code in (10, 20, 30, 40):
            self.fault(Faults.STILL_RUNNING, withoutGroup, self.running, "gone", {"gone:0": code})
        for code in (0, 100, 200):
            self.assertEqual(withoutGroup(self.running, "gone", {"gone:0": code}), [self.running["keep"]])
        self.fault(Faults.BAD_NAME, withoutGroup, self.running, "nope", {})
        self.fault(Faults.BAD_NAME, withoutGroup, self.running, "gone:0", {})

    def test_removeWhatOthersNeedIsRefused(self):
        running = _running(Deploy("db", command=CMD), Deploy("api", command=CMD, depends_on=["db"]))
        text = self.fault(Faults.FAILED, withoutGroup, running, "db", {"db:0": 0})
        self.assertIn("'api' depends on db", text)


class WithoutAHostTests(HarnessTestCase):
    def test_addRemoveNeedAHostBuiltFromAConfig(self):
        """An admin over services built outside a host has no config to add from: a clear fault."""
        self.assertFault(self.call("supervisor.addProcessGroup", "web"), Faults.NO_SERVICE)
        self.assertFault(self.call("supervisor.removeProcessGroup", "web"), Faults.NO_SERVICE)

    def test_viewersCannotAddOrRemove(self):
        from tests.admin.helpers import VIEW

        for method in ("supervisor.addProcessGroup", "supervisor.removeProcessGroup"):
            self.assertFault(self.call(method, "web", user=VIEW), Faults.PERMISSION_DENIED)
