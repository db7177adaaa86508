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

Erasure: ``ddu:<user>`` names the user's ids; their keys are deleted (each in its own
slot), then the index. A failover can lose the last writes a master acknowledged
before it died (replication is asynchronous): a claim or confirmation lost that way
lets a re-sent copy of the event be published again; the consumers apply an event id
once (invariants 2 and 8 in ARCHITECTURE.md). An erasure's deletions lost that way
are found by the erasure's verification (a SCAN of every master), which then fails.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from headwater.dedupe.base import Claim, Pending
from headwater.dedupe.redis import RedisIdempotencyWindow

__all__ = ["RedisClusterIdempotencyWindow"]

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


class RedisClusterIdempotencyWindow(RedisIdempotencyWindow):
    """The window's keys spread over the cluster; scripts run per slot."""

    def __init__(self, url: str, *, window_s: float) -> None:
        super().__init__(url, window_s=window_s)
        from redis.crc import key_slot

        self._slot = key_slot

    def _by_slot(self, keys: Sequence[str]) -> dict[int, list[int]]:
        """Indexes of ``keys`` per hash slot."""
        out: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            out.setdefault(self._slot(key.encode()), []).append(i)
        return out

    def _per_slot(
        self, source: str, keys: Sequence[str], args: Sequence[object], per_key: Sequence[object]
    ) -> list[Any]:
        """``source`` once per slot over its keys (``args``, then each key's ``per_key``
        value), pipelined; the answers in the order of ``keys``."""
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        groups = list(self._by_slot(keys).values())

        def argv(group: list[int]) -> list[Any]:
            ks = [keys[i] for i in group]
            extra = [per_key[i] for i in group] if per_key else []
            return [len(ks), *ks, *args, *extra]

        def run() -> list[Any]:
            # The cluster client's pipeline refuses scripts: one pipeline per master.
            by_node: dict[str, tuple[Any, list[list[int]]]] = {}
            for group in groups:
                node = self._redis.get_node_from_key(keys[group[0]])
                by_node.setdefault(node.name, (node, []))[1].append(group)
            out: list[Any] = [None] * len(keys)
            for node, node_groups in by_node.values():
                pipe = self._redis.get_redis_connection(node).pipeline(transaction=False)
                for group in node_groups:
                    pipe.evalsha(sha, *argv(group))
                answers = pipe.execute(raise_on_error=False)
                for group, answer in zip(node_groups, answers, strict=True):
                    found = answer
                    if isinstance(found, self._conn.no_script):
                        # A node that never loaded it (a replica promoted since): send it.
                        found = self._redis.eval(source, *argv(group))
                    elif isinstance(found, Exception):
                        raise found
                    for i, value in zip(group, found, strict=True):
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
        now = int(time.time() * 1000)
        answers = self._per_slot(
            _CLAIM, keys, [token, now, self._ttl_ms], [users[e] for e in unique]
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

    def release(self, token: str, event_ids: Sequence[str]) -> None:
        if event_ids:
            self._per_slot(_RELEASE, self._ids(event_ids), [token], [])

    def take_over(self, claims: Mapping[str, Sequence[str]], token: str) -> set[str]:
        moved: set[str] = set()
        now = int(time.time() * 1000)
        for old, event_ids in claims.items():
            if not event_ids or self._call(lambda o=old: self._confirmed({o})):  # type: ignore[misc]
                continue  # a confirmed claim stays
            flags = self._per_slot(
                _TAKE_OVER, self._ids(event_ids), [old, token, now, self._ttl_ms], []
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
