"""The collector tuning a Salvus process applies once its reactor runs."""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from salvusctl.gctune import THRESHOLDS, freezeNow, tuneCollector


class _Reactor:
    def __init__(self):
        self.hooks = []

    def callWhenRunning(self, f, *args):
        self.hooks.append((f, args))


class TuneTests(SynchronousTestCase):
    def setUp(self):
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)

    def test_tuningWaitsForTheReactorToRun(self):
        """Nothing changes while the host is being built: start-up's objects are frozen only once
        everything has started, so the services' own are among them."""
        reactor = _Reactor()
        before = gc.get_threshold()
        tuneCollector(reactor)
        self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(reactor.hooks, [(freezeNow, (THRESHOLDS,))])

    def test_freezeMovesLiveObjectsOutOfCollectionsAndSetsThresholds(self):
        """After the freeze, what was alive is in the permanent generation, and collections
        happen at the tuned thresholds."""
        gc.unfreeze()
        freezeNow((12345, 6, 7))
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertEqual(gc.get_threshold(), (12345, 6, 7))
