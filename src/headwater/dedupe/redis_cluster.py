"""The idempotency window on a Redis Cluster.

``redis+cluster://host:port,host:port/?prefix=hw`` (or ``redis://host:port?cluster=true``).

Key layout (the same names as on one node; each key hashes on its whole name, so the
window spreads over every slot)::

    <prefix>:dd:<event id>    "<token>|<claimed ms>|<user>" with the window's TTL
    <prefix>:ddt:<token>      present once the token is confirmed (TTL: the window)
    <prefix>:ddu:<user>       the user's event ids (a set, TTL: the window), for erasure

What changes from one node: a script may only touch keys of one slot, so a batch's
claim runs one script per slot the ids fall in, all pipelined (one round trip per
master), and each script answers only for its own keys. Whether another token is
confirmed (``ddt``) lives in another slot; it is read after the claim script. The
order is safe: a confirmation seen late makes an id look pending, and the sender
waits and claims again, when it finds it done. ``take_over`` reads the old token's
confirmation first and then moves the ids slot by slot; a confirmation landing in
between is as if it came after the take-over, which a single node allows too.
Each id's claim is atomic on its own, as the port asks; the batch as a whole is not
one transaction (it never had to be: every id is decided by its own key).

Failover. Every write that decides whether an event is published (a claim, its user
index, a confirmation, a release, a take-over) waits for a replica before it is
acknowledged, as the online store's writes do (``?wait=1&wait_ms=1000`` by default,
:class:`headwater._redis.ReplicaAcks`): a master SIGKILLed after the acknowledgement
loses none of them when its replica is promoted, so a hedged or timed-out resend finds
the claim and is not published twice
(``tests/history/test_exactly_once.py::test_exactly_once_on_a_redis_cluster_losing_a_master``).
What can still be lost: a write whose WAIT timed out (the gateway answers 503 and the
producer resends) if its master dies before the replica catches up, and writes to a
master with no replica left; a claim lost that way lets a resent copy be published
again, and the consumers still apply an event id once (invariants 2 and 8 in
ARCHITECTURE.md). ``?wait=0`` skips the wait.

Erasure: ``ddu:<user>`` names the user's ids; their keys are deleted (each in its own
slot), then the index. Deletions lost in a failover are found by the erasure's
verification (a SCAN of every master), which then fails.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from headwater._redis import ReplicaAcks
from headwater.dedupe.base import Claim, Pending
from headwater.dedupe.redis import RedisIdempotencyWindow

__all__ = ["RedisClusterIdempotencyWindow"]

_I = TypeVar("_I")

# As ``_CLAIM`` on one node, without the look at other tokens' confirmations (another
# slot): per id M (mine), D (accepted before claims existed) or O|token|ms (another's).
_CLAIM = """
local token, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local value = token .. '|' .. now .. '|' .. ARGV[3 + i]
  if redis.call('SET', key, value, 'NX', 'PX', ttl) then
    out[i] = 'M'
  else
    local held = redis.call('GET', key) or ''
    local owner, ms = string.match(held, '^([^|]*)|([^|]*)|')
    if owner == nil then
      out[i] = 'D'
    elseif owner == token then
      out[i] = 'M'
    else
      out[i] = 'O|' .. owner .. '|' .. ms
    end
  end
end
return out
"""
# As on one node: deletes the ids this token (ARGV[1]) still holds; 1 per id deleted.
_RELEASE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  local held = redis.call('GET', key)
  if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
    redis.call('DEL', key)
    out[i] = 1
  end
end
return out
"""
# ARGV: old token, new token, now, ttl. Moves the ids the old token still holds; the
# caller has checked that the old token never confirmed.
_TAKE_OVER = """
local old, new, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = 0
  local held = redis.call('GET', key)
  if held then
    local owner, _, user = string.match(held, '^([^|]*)|([^|]*)|(.*)$')
    if owner == old then
      redis.call('SET', key, new .. '|' .. now .. '|' .. user, 'PX', ttl)
      out[i] = 1
    end
  end
end
return out
"""


#: Attempts at a batch of scripts while the cluster moves a slot or promotes a replica.
_ATTEMPTS = 6
#: In a script's arguments: the time of the attempt that runs it, in ms. A claim retried
#: through a failover is dated when it was written, not when it was first tried: dated
#: earlier, it could look past its lease to a concurrent send the moment it lands.
_NOW = object()


class RedisClusterIdempotencyWindow(RedisIdempotencyWindow):
    """The window's keys spread over the cluster; scripts run per slot."""

    def __init__(self, url: str, *, window_s: float) -> None:
        super().__init__(url, window_s=window_s)
        from redis.crc import key_slot

        self._slot = key_slot
        self._acks = ReplicaAcks(url)

    def _by_slot(self, keys: Sequence[str]) -> dict[int, list[int]]:
        """Indexes of ``keys`` per hash slot."""
        out: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            out.setdefault(self._slot(key.encode()), []).append(i)
        return out

    def _by_node(
        self, items: Sequence[_I], key_of: Callable[[_I], str]
    ) -> list[tuple[Any, list[_I]]]:
        """``items`` grouped by the master that holds their key now, with that master."""
        by_node: dict[str, tuple[Any, list[_I]]] = {}
        for item in items:
            node = self._redis.get_node_from_key(key_of(item))
            by_node.setdefault(node.name, (node, []))[1].append(item)
        return list(by_node.values())

    def _per_slot(
        self, source: str, keys: Sequence[str], args: Sequence[object], per_key: Sequence[object]
    ) -> list[Any]:
        """``source`` once per slot over its keys (``args``, then each key's ``per_key``
        value), pipelined; the answers in the order of ``keys``."""
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        groups = list(self._by_slot(keys).values())

        attempt = {"now": 0}

        def argv(group: list[int]) -> list[Any]:
            ks = [keys[i] for i in group]
            extra = [per_key[i] for i in group] if per_key else []
            given = [attempt["now"] if a is _NOW else a for a in args]
            return [len(ks), *ks, *given, *extra]

        def scripts(pipe: Any, gs: list[list[int]], send: bool = False) -> None:
            for g in gs:
                if send:
                    pipe.eval(source, *argv(g))
                else:
                    pipe.evalsha(sha, *argv(g))

        def run() -> list[Any]:
            attempt["now"] = int(time.time() * 1000)
            # The cluster client's pipeline refuses scripts: one pipeline per master,
            # ending with the wait for its replica.
            out: list[Any] = [None] * len(keys)
            for node, node_groups in self._by_node(groups, lambda g: keys[g[0]]):
                answers = self._acks.execute(
                    self._redis, node, partial(scripts, gs=node_groups), raise_on_error=False
                )
                # A node that never loaded the script (a replica promoted since): send it.
                found = dict(zip(map(tuple, node_groups), answers, strict=True))
                unloaded = [
                    g for g in node_groups if isinstance(found[tuple(g)], self._conn.no_script)
                ]
                if unloaded:
                    sent = self._acks.execute(
                        self._redis, node, partial(scripts, gs=unloaded, send=True)
                    )
                    found.update(zip(map(tuple, unloaded), sent, strict=True))
                for group in node_groups:
                    answer = found[tuple(group)]
                    if isinstance(answer, Exception):
                        raise answer
                    for i, value in zip(group, answer, strict=True):
                        out[i] = value
            return out

        return self._call(lambda: self._retrying(run))

    def _retrying(self, run: Callable[[], list[Any]]) -> list[Any]:
        """``run`` again while the cluster moves a slot or promotes a replica (the
        scripts are idempotent for their token; a take-over run twice answers 0 for an
        id it moved the first time, and the sender's next claim finds it its own)."""
        import redis

        retry: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.AskError,  # MovedError too
        )
        for n in range(_ATTEMPTS):
            try:
                return run()
            except retry:
                if n == _ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * 2**n)
                self._redis.nodes_manager.initialize()
        raise AssertionError("unreachable")

    def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()

        def read() -> set[str]:
            values = self._redis.mget_nonatomic(self._ids(event_ids))
            held = {e: v.decode() for e, v in zip(event_ids, values, strict=True) if v}
            tokens = {e: v.split("|", 1)[0] for e, v in held.items() if "|" in v}
            confirmed = self._confirmed(set(tokens.values()))
            return {e for e in held if e not in tokens or tokens[e] in confirmed}

        return self._call(read)

    def _confirmed(self, tokens: set[str]) -> set[str]:
        if not tokens:
            return set()
        ordered = sorted(tokens)
        pipe = self._redis.pipeline(transaction=False)
        for token in ordered:
            pipe.exists(f"{self._prefix}:ddt:{token}")
        return {t for t, n in zip(ordered, pipe.execute(), strict=True) if n}

    def claim(self, entries: Sequence[tuple[str, str]], token: str) -> Claim:
        out = Claim()
        if not entries:
            return out
        # A repeated id is decided once (its first user kept), as one script would.
        unique = list(dict.fromkeys(e for e, _ in entries))
        users = dict(reversed(entries))
        keys = self._ids(unique)
        answers = self._per_slot(
            _CLAIM, keys, [token, _NOW, self._ttl_ms], [users[e] for e in unique]
        )
        others: dict[str, tuple[str, int]] = {}
        for event_id, answer in zip(unique, answers, strict=True):
            kind, _, rest = answer.decode().partition("|")
            if kind == "M":
                out.mine.add(event_id)
            elif kind == "D":
                out.done.add(event_id)
            else:
                held_by, _, claimed_ms = rest.partition("|")
                others[event_id] = (held_by, int(claimed_ms))
        # Confirmed after the script looked is fine: pending now, done on the next look.
        confirmed = self._call(lambda: self._confirmed({t for t, _ in others.values()}))
        for event_id, (held_by, claimed_ms) in others.items():
            if held_by in confirmed:
                out.done.add(event_id)
            else:
                out.pending[event_id] = Pending(held_by, claimed_ms)
        mine = [(e, users[e]) for e in unique if e in out.mine]
        if mine:
            self._index_users(mine)
        return out

    def _write(self, keys: Sequence[str], build: Callable[..., object]) -> None:
        """``build(pipe, keys=those of one master)`` on each master that holds some of
        ``keys``, each pipeline ending with the wait for its replica (the writes given
        are idempotent: retried while a slot moves or a replica is promoted)."""

        def run() -> list[Any]:
            for node, node_keys in self._by_node(keys, lambda key: key):
                self._acks.execute(self._redis, node, partial(build, keys=node_keys))
            return []

        self._call(lambda: self._retrying(run))

    def _index_users(self, entries: Sequence[tuple[str, str]]) -> None:
        # Each user's ids, so that an erasure finds them without a scan.
        ids: dict[str, list[str]] = {}
        for event_id, user_id in entries:
            ids.setdefault(f"{self._prefix}:ddu:{user_id}", []).append(event_id)

        def build(pipe: Any, keys: list[str]) -> None:
            for user_key in keys:
                pipe.sadd(user_key, *ids[user_key])
                pipe.pexpire(user_key, self._ttl_ms)

        self._write(list(ids), build)

    def confirm_many(self, tokens: Sequence[str]) -> None:
        def build(pipe: Any, keys: list[str]) -> None:
            for confirmed in keys:
                pipe.set(confirmed, 1, px=self._ttl_ms)

        if tokens:
            self._write([f"{self._prefix}:ddt:{token}" for token in tokens], build)

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        if event_ids:
            self._per_slot(_RELEASE, self._ids(event_ids), [token], [])

    def take_over(self, claims: Mapping[str, Sequence[str]], token: str) -> set[str]:
        moved: set[str] = set()
        for old, event_ids in claims.items():
            if not event_ids or self._call(lambda o=old: self._confirmed({o})):  # type: ignore[misc]
                continue  # a confirmed claim stays
            flags = self._per_slot(
                _TAKE_OVER, self._ids(event_ids), [old, token, _NOW, self._ttl_ms], []
            )
            moved.update(e for e, f in zip(event_ids, flags, strict=True) if int(f))
        return moved

    def erase_user(self, user_id: str) -> int:
        user_key = f"{self._prefix}:ddu:{user_id}"

        def erase() -> int:
            ids = [i.decode() for i in self._redis.smembers(user_key)]
            # The ids first, the index last: an erasure cut short is found again by it.
            removed = int(self._redis.delete(*self._ids(ids))) if ids else 0
            self._redis.delete(user_key)
            return removed

        return int(self._call(erase))
