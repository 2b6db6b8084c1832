"""Authentication: users file, roles, basic auth on every route, failed-login rate limit."""

from __future__ import annotations

import os
import stat

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from salvusctl.admin.auth import LoginRateLimiter
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
        clock = Clock()
        limiter = LoginRateLimiter(clock, limit=3, window=60)
        for _ in range(3):
            self.assertEqual(limiter.blockedFor("1.2.3.4"), 0)
            limiter.failed("1.2.3.4")
        self.assertEqual(limiter.blockedFor("1.2.3.4"), 60)
        self.assertEqual(limiter.blockedFor("5.6.7.8"), 0)
        clock.advance(59)
        self.assertEqual(limiter.blockedFor("1.2.3.4"), 1)
        clock.advance(1)
        self.assertEqual(limiter.blockedFor("1.2.3.4"), 0)

    def test_successClears(self):
        limiter = LoginRateLimiter(Clock(), limit=2)
        limiter.failed("a")
        limiter.succeeded("a")
        limiter.failed("a")
        self.assertEqual(limiter.blockedFor("a"), 0)

    def test_boundedMemory(self):
        limiter = LoginRateLimiter(Clock(), max_clients=10)
        for i in range(100):
            limiter.failed(f"10.0.0.{i}")
        self.assertEqual(len(limiter._failures), 10)


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

    def test_securityHeaders(self):
        """Even an error response carries the security headers."""
        for user in (None, OP, VIEW):
            response, _ = self.h.request(self, "GET", "/", user=user)
            headers = response.headers
            self.assertEqual(headers.getRawHeaders(b"x-frame-options"), [b"DENY"])
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
            self.assertIn(b"default-src 'none'", headers.getRawHeaders(b"content-security-policy")[0])
            self.assertIsNone(headers.getRawHeaders(b"strict-transport-security"))
