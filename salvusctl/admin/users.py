"""The admin users file: who may log in, with which role, kept outside the host's config.

One line per user, C{name:role:scrypt$n$r$p$salt$hash} (salt and hash in base64).  Only salted
C{hashlib.scrypt} hashes are ever written; the file is created owner-only (0600) and replaced
atomically, so a crash while editing never leaves a half-written file that locks everybody out.
The file is re-read when its modification time changes, so C{salvusctl user add} takes effect on a
running host without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass

__all__ = [
    "DUMMY_HASH",
    "ROLES",
    "VIEWER",
    "OPERATOR",
    "User",
    "UsersFile",
    "UsersFileError",
    "hashPassword",
    "verifyPassword",
    "randomPassword",
    "ensureAdminUser",
    "writePasswordFile",
]

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)

# scrypt cost: about 30 ms on this machine kind; successful checks are cached in memory so that
# clients sending credentials on every request (supervisorctl, browsers) do not pay it each time.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class UsersFileError(Exception):
    """The users file is unreadable or malformed, or an edit is impossible (one line message)."""


@dataclass(frozen=True)
class User:
    """One account: its name, role and stored password hash."""

    name: str
    role: str
    hash: str

    @property
    def canOperate(self) -> bool:
        """Operators act (start, stop, drain); viewers only read."""
        return self.role == OPERATOR


def hashPassword(password: str, salt: bytes | None = None) -> str:
    """Return C{scrypt$n$r$p$salt$hash} for C{password} with a fresh random salt."""
    if salt is None:
        salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "scrypt${}${}${}${}${}".format(
        _SCRYPT_N,
        _SCRYPT_R,
        _SCRYPT_P,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    )


def verifyPassword(password: str, stored: str) -> bool:
    """Check C{password} against a stored hash in constant time; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def randomPassword() -> str:
    """A password strong enough to print once and paste (about 128 bits)."""
    return secrets.token_urlsafe(16)


class UsersFile:
    """Reads, checks and edits one users file.

    @param path: where the file lives; it need not exist yet (no user can log in then).
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None
        # name -> keyed digests of passwords already verified against the current hash
        self._verified: dict[str, set[bytes]] = {}
        self._cacheKey = secrets.token_bytes(32)

    # -- reading ---------------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def users(self) -> dict[str, User]:
        """All users by name, re-reading the file if it changed since the last look."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._users = self._parse() if stamp is not None else {}
            self._stamp = stamp
            self._verified.clear()
        return dict(self._users)

    def _parse(self) -> dict[str, User]:
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsersFileError(f"cannot read users file {self.path}: {e.strerror}")
        users: dict[str, User] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) != 3 or parts[1] not in ROLES or not _NAME.match(parts[0]):
                raise UsersFileError(f"{self.path}:{number}: expected name:role:hash")
            users[parts[0]] = User(parts[0], parts[1], parts[2])
        return users

    def get(self, name: str) -> User | None:
        """The user called C{name}, or None."""
        return self.users().get(name)

    def check(self, name: str, password: str) -> User | None:
        """The user if C{password} is right, else None (unknown users cost as much as known ones)."""
        user, key, cached = self.lookup(name, password)
        if cached:
            return user
        if not verifyPassword(password, user.hash if user is not None else _DUMMY_HASH) or user is None:
            return None
        self.remember(name, key, user)
        return user

    def lookup(self, name: str, password: str) -> tuple[User | None, bytes, bool]:
        """The cheap half of L{check}: (user or None, cache key, whether already verified).

        When not cached, the caller runs L{verifyPassword} (slow, may run in a thread) and then
        L{remember}s a success.
        """
        user = self.get(name)
        key = hmac.new(self._cacheKey, f"{name}\0{password}".encode(), "sha256").digest()
        return user, key, user is not None and key in self._verified.get(name, ())

    def remember(self, name: str, key: bytes, user: User) -> None:
        """Cache a verified password (if the user's hash has not changed meanwhile)."""
        if self.get(name) == user:
            self._verified.setdefault(name, set()).add(key)

    # -- editing ---------------------------------------------------------------------------------

    def add(self, name: str, password: str, role: str = OPERATOR) -> User:
        """Add a user; refuses an existing name (use L{passwd}) or a bad name or role."""
        if not _NAME.match(name or ""):
            raise UsersFileError(f"bad user name {name!r}: use 1-64 letters, digits, _ . @ -")
        if role not in ROLES:
            raise UsersFileError(f"bad role {role!r}: use one of {', '.join(ROLES)}")
        if not password:
            raise UsersFileError("empty password")
        users = self.users()
        if name in users:
            raise UsersFileError(f"user {name!r} already exists")
        users[name] = User(name, role, hashPassword(password))
        self._write(users)
        return users[name]

    def remove(self, name: str) -> None:
        """Remove a user; an unknown name is an error."""
        users = self.users()
        if name not in users:
            raise UsersFileError(f"no user {name!r}")
        del users[name]
        self._write(users)

    def passwd(self, name: str, password: str, role: str | None = None) -> User:
        """Set a new password (and optionally a new role) for an existing user."""
        users = self.users()
        if name not in users:
            raise UsersFileError(f"no user {name!r}")
        if not password:
            raise UsersFileError("empty password")
        if role is not None and role not in ROLES:
            raise UsersFileError(f"bad role {role!r}: use one of {', '.join(ROLES)}")
        users[name] = User(name, role or users[name].role, hashPassword(password))
        self._write(users)
        return users[name]

    def _write(self, users: dict[str, User]) -> None:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".users.", dir=directory)
        except OSError as e:
            raise UsersFileError(f"cannot write users file {self.path}: {e.strerror}")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("# Salvus admin users: name:role:scrypt hash.  Edit with `salvusctl user`.\n")
                for user in sorted(users.values(), key=lambda u: u.name):
                    f.write(f"{user.name}:{user.role}:{user.hash}\n")
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._stamp = None


_DUMMY_HASH = hashPassword("not a password", salt=b"0123456789abcdef")
DUMMY_HASH = _DUMMY_HASH


def ensureAdminUser(path: str, name: str = "admin") -> str | None:
    """Create an operator called C{name} with a random password if the file has no users.

    Returns the password (to be printed once) or None when users already exist.
    """
    users = UsersFile(path)
    if users.users():
        return None
    password = randomPassword()
    users.add(name, password, OPERATOR)
    return password


def writePasswordFile(directory: str, name: str, password: str) -> str:
    """Write a new user's password to C{directory/NAME.password}, mode 0600, and return its path.

    The bootstrap password must reach the operator without passing through a log: twistd sends
    stdout to its log file, and a service manager to a journal that other accounts may read.  The
    directory is created 0700; the file is written whole (a temporary file, then renamed), with
    0600 set on the open descriptor so no umask can widen it.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{name}.password")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (password + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
