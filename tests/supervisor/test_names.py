"""Process names: supervisord's on request, Salvus's C{name:N} by default, bad templates refused."""

from __future__ import annotations

import sys

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.errors import ConfigError
from salvusctl.supervisor import Deploy
from salvusctl.supervisor.names import (
    SALVUS_NAMES,
    SUPERVISORD_NAMES,
    ProcessNameError,
    legacyIndex,
    processNames,
)
from salvusctl.supervisor.testing import FakeSupervisor


class ProcessNamesTests(SynchronousTestCase):
    def test_supervisordNamesOneProcessAfterItsProgram(self):
        """numprocs=1 is the program's name, as supervisord's default process_name."""
        self.assertEqual(processNames("ticker", 1, SUPERVISORD_NAMES), ["ticker"])

    def test_supervisordNamesSeveralWithTwoDigits(self):
        """numprocs>1 is %(program_name)s_%(process_num)02d, as in supervisord's examples."""
        self.assertEqual(processNames("pool", 3, SUPERVISORD_NAMES), ["pool_00", "pool_01", "pool_02"])

    def test_templateIsUsedAsGiven(self):
        """A template the user wrote names one process as it names many (supervisord does)."""
        self.assertEqual(processNames("w", 2, "%(group_name)s-%(process_num)d", group="g"), ["g-0", "g-1"])
        self.assertEqual(processNames("w", 1, "job%(process_num)03d"), ["job000"])

    def test_defaultKeepsSalvusSpelling(self):
        """Without process_name a deploy keeps web:0 … (hosts written against it go on working)."""
        self.assertEqual(processNames("web", 2), ["web:0", "web:1"])
        self.assertEqual(processNames("web", 2, SALVUS_NAMES), ["web:0", "web:1"])

    def test_badTemplatesAreRefusedWithOneSentence(self):
        """A template that cannot name every process distinctly is refused, saying why."""
        for template, numprocs, words in [
            ("%(program_name)s", 2, "must contain %(process_num)"),
            ("%(nope)s_%(process_num)d", 2, "unknown key %(nope)s"),
            ("%(process_num)d/x", 1, "one word"),
            ("%(program_name)s %(process_num)d", 2, "one word"),
            ("%(process_num)", 2, "does not expand"),
        ]:
            with self.assertRaises(ProcessNameError) as caught:
                processNames("w", numprocs, template)
            self.assertIn(words, str(caught.exception), template)

    def test_legacyIndex(self):
        self.assertEqual(legacyIndex("web:3"), ("web", 3))
        self.assertEqual(legacyIndex("g:web:0"), ("g:web", 0))
        self.assertIsNone(legacyIndex("web"))
        self.assertIsNone(legacyIndex("web:*"))


class DeployNamesTests(SynchronousTestCase):
    def test_deployNamesItsInstances(self):
        d = Deploy("pool", [sys.executable], numprocs=2, process_name=SUPERVISORD_NAMES)
        self.assertEqual(d.instanceNames(), ["pool_00", "pool_01"])
        self.assertEqual(Deploy("ticker", [sys.executable], process_name="supervisord").instanceNames(),
                         ["ticker"])

    def test_badProcessNameIsAConfigError(self):
        """validate() names the deploy and the template; nothing is half-declared."""
        with self.assertRaises(ConfigError) as caught:
            Deploy("pool", [sys.executable], numprocs=2, process_name="%(program_name)s").validate()
        self.assertIn("%(process_num)", str(caught.exception))
        self.assertIn("pool", str(caught.exception))
        with self.assertRaises(ConfigError):
            Deploy("pool", [sys.executable], process_name=3).validate()


class InstanceNameClashTests(SynchronousTestCase):
    def test_twoDeploysCannotNameAnInstanceAlike(self):
        """pool_00 of pool (numprocs=2) and a deploy pool_00 would be one instance: refused."""
        from salvusctl.supervisor.deploy import validateDeploys

        deploys = [Deploy("pool", [sys.executable], numprocs=2, process_name="supervisord"),
                   Deploy("pool_00", [sys.executable], process_name="supervisord")]
        with self.assertRaises(ConfigError) as caught:
            validateDeploys(deploys)
        self.assertIn("'pool_00'", str(caught.exception))
        validateDeploys([Deploy("pool", [sys.executable], numprocs=2, process_name="supervisord"),
                         Deploy("pool_00", [sys.executable])])  # pool_00:0 is another name


class FakeSupervisorNamesTests(SynchronousTestCase):
    def test_fakeAcceptsBothSpellings(self):
        """The fake finds web:1 by its name and by the supervisord-style web_01 a test adds."""
        fake = FakeSupervisor(deploys={"web": 2})
        self.assertEqual(fake.instanceInfo("web:1")["name"], "web:1")
        fake.addInstance("pool_01")
        self.assertEqual(fake.instanceInfo("pool_01")["group"], "pool")


class DeclaredModelNamesTests(SynchronousTestCase):
    def test_declaredHostModelNamesAsTheDeploy(self):
        """A host read in another process (reread, avail) names instances as the deploy does."""
        from salvusctl.host.model import Declared, _entry

        d = Deploy("pool", [sys.executable], numprocs=2, process_name="supervisord")
        self.assertEqual(Declared(_entry(d)).instanceNames(), ["pool_00", "pool_01"])
        self.assertEqual(Declared(_entry(Deploy("web", [sys.executable]))).instanceNames(), ["web:0"])
