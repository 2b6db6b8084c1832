"""Authentication: users file, roles, basic auth on every route, failed-login rate limit."""

from __future__ import annotations

import os
import stat

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.auth import LoginRateLimiter, PasswordChecks, TooManyAttempts
from salvusctl.admin.users import (
    OPERATOR,
    VIEWER,
    UsersFile,
    UsersFileError,
    ensureAdminUser,
    hashPassword,
    verifyPassword,
)
from tests.admin.helpers import OP, VIEW, HarnessTestCase, tempDir


class PasswordHashTests(SynchronousTestCase):
    def test_roundTrip(self):
        """Only a salted scrypt hash is stored; the right password verifies, others do not."""
        stored = hashPassword("s3cret")
        self.assertTrue(stored.startswith("scrypt$16384$8$1$"))
        self.assertNotIn("s3cret", stored)
        self.assertTrue(verifyPassword("s3cret", stored))
        self.assertFalse(verifyPassword("s3cret!", stored))

    def test_salted(self):
        """The same password hashes differently each time (a stolen file resists lookup tables)."""
        self.assertNotEqual(hashPassword("x"), hashPassword("x"))

    def test_malformedHash(self):
        for stored in ("", "plain", "md5$1$2$3$4$5", "scrypt$x$8$1$AA==$AA=="):
            self.assertFalse(verifyPassword("x", stored))


class UsersFileTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(tempDir(self), "users")

    def test_addCheckRemove(self):
        users = UsersFile(self.path)
        users.add("alice", "pw", OPERATOR)
        users.add("bob", "pw2", VIEWER)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        fresh = UsersFile(self.path)
        self.assertEqual(fresh.check("alice", "pw").role, OPERATOR)
        self.assertIsNone(fresh.check("alice", "nope"))
        self.assertIsNone(fresh.check("carol", "pw"))
        fresh.passwd("bob", "new", role=OPERATOR)
        self.assertEqual(UsersFile(self.path).check("bob", "new").role, OPERATOR)
        fresh.remove("alice")
        self.assertIsNone(UsersFile(self.path).get("alice"))

    def test_reloadsWhenChanged(self):
        """A running admin sees `salvusctl user add` without a restart."""
        running = UsersFile(self.path)
        self.assertEqual(running.users(), {})
        UsersFile(self.path).add("late", "pw")
        self.assertIsNotNone(running.check("late", "pw"))
        UsersFile(self.path).passwd("late", "changed")
        self.assertIsNone(running.check("late", "pw"))

    def test_errors(self):
        users = UsersFile(self.path)
        users.add("alice", "pw")
        for call, message in [
            (lambda: users.add("alice", "pw"), "already exists"),
            (lambda: users.add("bad name", "pw"), "bad user name"),
            (lambda: users.add("x", "pw", "root"), "bad role"),
            (lambda: users.add("y", ""), "empty password"),
            (lambda: users.remove("nobody"), "no user"),
            (lambda: users.passwd("nobody", "x"), "no user"),
        ]:
            with self.assertRaises(UsersFileError) as e:
                call()
            self.assertIn(message, str(e.exception))

    def test_malformedFile(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            f.write("# comment\nalice:god:scrypt$1\n")
        with self.assertRaises(UsersFileError) as e:
            UsersFile(self.path).users()
        self.assertIn(":2:", str(e.exception))

    def test_ensureAdminUser(self):
        """The default host creates one operator with a random password, once."""
        password = ensureAdminUser(self.path)
        self.assertGreaterEqual(len(password), 20)
        self.assertEqual(UsersFile(self.path).check("admin", password).role, OPERATOR)
        self.assertIsNone(ensureAdminUser(self.path))


class RateLimiterTests(SynchronousTestCase):
    def test_window(self):
        """C{limit} attempts lock that user at that address for the window; nobody else."""
        clock = Clock()
        limiter = LoginRateLimiter(clock, limit=3, window=60)
        for _ in range(3):
            self.assertEqual(limiter.blockedFor("op", "1.2.3.4"), 0)
            limiter.attempt("op", "1.2.3.4")
        self.assertEqual(limiter.blockedFor("op", "1.2.3.4"), 60)
        self.assertEqual(limiter.blockedFor("op", "5.6.7.8"), 0)
        self.assertEqual(limiter.blockedFor("view", "1.2.3.4"), 0)
        clock.advance(59)
        self.assertEqual(limiter.blockedFor("op", "1.2.3.4"), 1)
        clock.advance(1)
        self.assertEqual(limiter.blockedFor("op", "1.2.3.4"), 0)

    def test_backoff(self):
        """Each further lock of the same pair lasts twice as long, up to max_backoff."""
        clock = Clock()
        limiter = LoginRateLimiter(clock, limit=2, window=60, max_backoff=200)
        for expected in (60, 120, 200, 200):
            limiter.attempt("op", "a")
            limiter.attempt("op", "a")
            self.assertEqual(limiter.blockedFor("op", "a"), expected)
            clock.advance(expected)

    def test_successClearsOnlyItsOwnUser(self):
        limiter = LoginRateLimiter(Clock(), limit=2)
        limiter.attempt("op", "a")
        limiter.attempt("view", "a")
        limiter.succeeded("view", "a")
        limiter.attempt("op", "a")
        self.assertEqual(limiter.blockedFor("op", "a"), 60)
        self.assertEqual(limiter.blockedFor("view", "a"), 0)

    def test_perUserLimitSparesKnownClients(self):
        """A guesser spread over many addresses is stopped per user; where the user logged in
        before, and on the unix socket, it still gets in."""
        limiter = LoginRateLimiter(Clock(), limit=5, user_factor=2)
        limiter.attempt("op", "10.0.0.1")
        limiter.succeeded("op", "10.0.0.1")
        for i in range(10):
            limiter.attempt("op", f"192.0.2.{i}")
        self.assertEqual(limiter.blockedFor("op", "192.0.2.200"), 60)
        self.assertEqual(limiter.blockedFor("op", "10.0.0.1"), 0)
        self.assertEqual(limiter.blockedFor("op", "unix:uid=0"), 0)
        self.assertEqual(limiter.blockedFor("view", "192.0.2.200"), 0)

    def test_boundedMemory(self):
        """Unknown user names sprayed from everywhere keep a bounded number of records."""
        limiter = LoginRateLimiter(Clock(), max_clients=10)
        for i in range(1000):
            limiter.attempt(f"ghost{i}", f"10.0.{i // 256}.{i % 256}")
        self.assertLessEqual(limiter.size(), 20)

    def test_lockedRecordsOutliveASpray(self):
        """Filling the table with new names does not forget a pair that is locked."""
        limiter = LoginRateLimiter(Clock(), limit=2, max_clients=10)
        limiter.attempt("op", "a")
        limiter.attempt("op", "a")
        for i in range(100):
            limiter.attempt(f"ghost{i}", "a")
        self.assertEqual(limiter.blockedFor("op", "a"), 60)


class PasswordChecksTests(SynchronousTestCase):
    def test_boundedQueue(self):
        """Beyond the running and waiting checks, a check is refused at once (429), not queued."""
        checks = PasswordChecks(concurrency=2, max_waiting=2, per_client=10)
        pending = [defer.Deferred() for _ in range(4)]
        results = [checks.run("a", lambda d=d: d) for d in pending]
        self.assertEqual(checks.running, 2)
        with self.assertRaises(TooManyAttempts):
            checks.run("b", lambda: defer.succeed(True))
        pending[0].callback(True)
        self.assertEqual(self.successResultOf(results[0]), True)
        self.assertEqual(checks.running, 2)
        for d in pending[1:]:
            d.callback(False)
        self.assertEqual(checks.running, 0)
        self.assertEqual(self.successResultOf(checks.run("b", lambda: defer.succeed(1))), 1)

    def test_perClient(self):
        checks = PasswordChecks(concurrency=1, max_waiting=100, per_client=2)
        checks.run("a", defer.Deferred)
        checks.run("a", defer.Deferred)
        with self.assertRaises(TooManyAttempts):
            checks.run("a", defer.Deferred)
        checks.run("b", defer.Deferred)


class HTTPAuthTests(HarnessTestCase):
    def test_everyRouteNeedsAuth(self):
        """Pages, XML-RPC and metrics all answer 401 with a basic challenge to anonymous clients."""
        for method, path in [
            ("GET", "/"),
            ("GET", "/deploys"),
            ("POST", "/RPC2"),
            ("GET", "/metrics"),
            ("GET", "/nonexistent"),
            ("GET", "/static/x.css"),
        ]:
            response, _ = self.h.request(self, method, path, user=None)
            self.assertEqual(response.code, 401, path)
            self.assertIn(b"basic realm", response.headers.getRawHeaders(b"www-authenticate")[0])

    def test_wrongPassword(self):
        response, _ = self.h.request(self, "GET", "/", user=("op", "wrong"))
        self.assertEqual(response.code, 401)
        response, _ = self.h.request(self, "GET", "/", user=("ghost", "x"))
        self.assertEqual(response.code, 401)

    def test_rateLimited(self):
        """After five failures an address gets 429 even with the right password, until the window ends."""
        for _ in range(5):
            response, _ = self.h.request(self, "GET", "/", user=("op", "wrong"))
            self.assertEqual(response.code, 401)
        response, body = self.h.request(self, "GET", "/", user=OP)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"60"])
        self.h.clock.advance(61)
        response, _ = self.h.request(self, "GET", "/RPC2", user=OP)
        self.assertEqual(response.code, 405)

    def test_viewerLoginDoesNotClearOperatorGuesses(self):
        """Four wrong operator guesses then one valid viewer login, 25 times: the guesses are
        stopped after five (before: 100x 401, 0x 429), and the viewer is never refused."""
        codes = []
        for _ in range(25):
            for i in range(4):
                codes.append(self.h.request(self, "GET", "/metrics", user=("op", f"guess{i}"))[0].code)
            self.assertEqual(self.h.request(self, "GET", "/metrics", user=VIEW)[0].code, 200)
        self.assertEqual((codes.count(401), codes.count(429)), (5, 95))

    def test_othersFailuresNeverRefuseACorrectPassword(self):
        """Five wrong passwords from one address (for another user, or unknown ones) do not keep
        the operator out there (before: 429 for 60 s)."""
        for user in [("view", "wrong")] * 5 + [(f"ghost{i}", "x") for i in range(5)]:
            self.h.request(self, "GET", "/", user=user)
        self.assertEqual(self.h.request(self, "GET", "/", user=OP)[0].code, 200)
        self.assertEqual(self.h.request(self, "GET", "/", user=VIEW)[0].code, 429)

    def test_failedLoginIsAudited(self):
        """A failed login leaves a line with the name tried and the client's address."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.h.request(self, "GET", "/", user=("mallory", "x"))
        lines = [formatEvent(e) for e in events if "login failed" in (e.get("log_format") or "")]
        self.assertEqual(len(lines), 1)
        self.assertIn("'mallory'", lines[0])
        self.assertIn("127.0.0.1", lines[0])

    def test_securityHeaders(self):
        """Even an error response carries the security headers."""
        for user in (None, OP, VIEW):
            response, _ = self.h.request(self, "GET", "/", user=user)
            headers = response.headers
            self.assertEqual(headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"same-origin"])
            self.assertIn(b"default-src 'none'", headers.getRawHeaders(b"content-security-policy")[0])
            self.assertIsNone(headers.getRawHeaders(b"strict-transport-security"))
            self.assertIsNone(headers.getRawHeaders(b"server"))
