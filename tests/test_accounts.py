"""
The authenticator's cache, on a fake clock, with a lookup that counts its
calls (the database's side is tested in test_accounts_api).
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from masterd.accounts import MISS, Authenticator, Found, Principal, digestOf
from masterd.config import Role, TokenConfig
from masterd.errors import Forbidden

CONFIGURED = "configured-token-0123456789"


class FakeTokens:
    """
    Tokens by digest; each lookup waits until the test answers it.
    """

    def __init__(self) -> None:
        self.known: dict[bytes, Found] = {}
        self.waiting: list[tuple[bytes, Deferred[Found | None]]] = []

    def lookup(self, digest: bytes) -> Deferred[Found | None]:
        d: Deferred[Found | None] = Deferred()
        self.waiting.append((digest, d))
        return d

    def answer(self) -> None:
        waiting, self.waiting = self.waiting, []
        for digest, d in waiting:
            d.callback(self.known.get(digest))


class AuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tokens = FakeTokens()
        self.auth = Authenticator(
            [TokenConfig("boot", Role.admin, hashlib.sha256(CONFIGURED.encode()).digest())],
            self.tokens.lookup,  # type: ignore[arg-type]
            self.clock,
            cacheSeconds=5.0,
        )
        self.alice = Principal("alice", Role.user, 7)
        self.tokens.known[digestOf("alice-secret")] = Found(self.alice, None)

    def resolve(self, secret: str) -> Deferred[Principal | None]:
        return Deferred.fromCoroutine(self.auth.resolve(digestOf(secret)))

    def test_configuredWithoutTheDatabase(self) -> None:
        """
        A configuration token is known at once: no lookup.
        """
        self.assertEqual(self.auth.peek(digestOf(CONFIGURED)), Principal("boot", Role.admin))
        self.assertEqual(self.successResultOf(self.resolve(CONFIGURED)).name, "boot")
        self.assertEqual(self.auth.lookups, 0)

    def test_cachedForAFewSeconds(self) -> None:
        """
        A database token is looked up once, trusted for cacheSeconds, then
        looked up again.
        """
        self.assertIs(self.auth.peek(digestOf("alice-secret")), MISS)
        d = self.resolve("alice-secret")
        self.assertNoResult(d)
        self.tokens.answer()
        self.assertEqual(self.successResultOf(d), self.alice)
        self.clock.advance(4.9)
        self.assertEqual(self.auth.peek(digestOf("alice-secret")), self.alice)
        self.clock.advance(0.2)
        self.assertIs(self.auth.peek(digestOf("alice-secret")), MISS)
        self.assertEqual(self.auth.lookups, 1)

    def test_unknownCachedToo(self) -> None:
        """
        An unknown token is remembered as unknown for as long: a client
        retrying a bad token does not reach the database each time.
        """
        d = self.resolve("nobody-knows-this")
        self.tokens.answer()
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.auth.peek(digestOf("nobody-knows-this")))

    def test_neverPastExpiry(self) -> None:
        """
        A token that expires in 2 s is trusted for 2 s, not 5.
        """
        self.tokens.known[digestOf("short")] = Found(self.alice, 2.0)
        d = self.resolve("short")
        self.tokens.answer()
        self.successResultOf(d)
        self.clock.advance(2.01)
        self.assertIs(self.auth.peek(digestOf("short")), MISS)

    def test_invalidate(self) -> None:
        """
        A change announced anywhere empties the cache at once.
        """
        d = self.resolve("alice-secret")
        self.tokens.answer()
        self.successResultOf(d)
        self.auth.invalidate()
        self.assertIs(self.auth.peek(digestOf("alice-secret")), MISS)

    def test_invalidatedWhileLookingUp(self) -> None:
        """
        A lookup that began before an invalidation may have read the old
        row: its answer is given to its caller but not cached.
        """
        d = self.resolve("alice-secret")
        self.auth.invalidate()
        self.tokens.answer()
        self.assertEqual(self.successResultOf(d), self.alice)
        self.assertIs(self.auth.peek(digestOf("alice-secret")), MISS)

    def test_oneLookupForConcurrentRequests(self) -> None:
        first, second = self.resolve("alice-secret"), self.resolve("alice-secret")
        self.assertEqual(len(self.tokens.waiting), 1)
        self.tokens.answer()
        self.assertEqual(self.successResultOf(first), self.alice)
        self.assertEqual(self.successResultOf(second), self.alice)

    def test_lookupFailureReachesEveryWaiter(self) -> None:
        first, second = self.resolve("alice-secret"), self.resolve("alice-secret")
        ((_, pending),) = self.tokens.waiting
        pending.errback(RuntimeError("database away"))
        self.failureResultOf(first, RuntimeError)
        self.failureResultOf(second, RuntimeError)
        # Nothing is cached from a failure: the next request asks again.
        self.assertIs(self.auth.peek(digestOf("alice-secret")), MISS)

    def test_boundedCache(self) -> None:
        self.auth.maxEntries = 3
        for i in range(10):
            d = self.resolve(f"token-{i}")
            self.tokens.answer()
            self.successResultOf(d)
        self.assertLessEqual(len(self.auth._cache), 3)


class PrincipalTests(SynchronousTestCase):
    def test_roles(self) -> None:
        user = Principal("alice", Role.user)
        self.assertTrue(user.may(Role.viewer))
        self.assertTrue(user.may(Role.user))
        self.assertFalse(user.may(Role.operator))
        self.assertFalse(user.may(Role.agent))
        self.assertTrue(Principal("op", Role.operator).may(Role.user))
        self.assertFalse(Principal("v", Role.viewer).may(Role.user))

    def test_ownership(self) -> None:
        alice = Principal("alice", Role.user)
        alice.checkOwner("job", 1, "alice")
        e = self.assertRaises(Forbidden, alice.checkOwner, "job", 1, "bob")
        self.assertEqual(e.details, {"owner": "bob"})
        self.assertIn("'bob'", str(e))
        Principal("op", Role.operator).checkOwner("job", 1, "bob")
        self.assertRaises(Forbidden, Principal("v", Role.viewer).checkOwner, "job", 1, "v")
