"""The independent verification an erasure passes before it is ``completed``.

A participant confirms with its own scan; the verifier checks every store again by a
path of its own: it reads the store's files or keys directly (a byte search of SQLite
files and their write-ahead logs, every Parquet file and log entry of the Delta table, a
scan of every key and value on Redis) and looks for the raw user id (known until
completion) and the subject's keyed hash. Its findings, one per store, are the audit's
evidence; a store with residue is sent back to ``failed`` and chased again.

Requests that complete together are verified together: each store is read once for all
their users (a burst of a thousand requests is one pass, not a thousand).

This module holds the :class:`Verifier`, its findings and what a store check is given
and returns; the checks of SQLite files, the archive and Redis are in
``erasure.checks``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from headwater._time import now_text
from headwater.metrics import ERASURE_VERIFY_SECONDS

__all__ = ["CheckResult", "Finding", "StoreCheck", "Subject", "Verifier", "owners", "per_user"]

log = logging.getLogger("headwater.erasure")


class Finding(msgspec.Struct, frozen=True):
    """What the verification found of one user in one store."""

    participant: str
    method: str
    residue: int | None  # occurrences of the user found; None: the store cannot be read
    checked_at: str
    detail: dict[str, Any] = {}


class Subject(msgspec.Struct, frozen=True):
    """A user being verified: the raw id (until completion), its keyed hash, and the ids
    of the user's events the stores reported before erasing them."""

    user_id: str
    subject: str
    event_ids: tuple[str, ...] = ()

    @property
    def needles(self) -> tuple[str, ...]:
        """What a byte search looks for: the raw id and every event id."""
        return (self.user_id, *self.event_ids)


def owners(users: Sequence[Subject]) -> dict[str, str]:
    """Each searched value (raw id, event id) -> the raw id of the user it belongs to."""
    return {needle: u.user_id for u in users for needle in u.needles}


#: One store's check over many users: the method, and per raw user id its residue
#: (None: cannot be read) with the detail (files or keys that hold it).
CheckResult = tuple[str, dict[str, tuple[int | None, dict[str, Any]]]]
StoreCheck = Callable[[Sequence[Subject]], CheckResult]


def per_user(
    users: Sequence[Subject], hits: Mapping[str, Mapping[str, int]]
) -> dict[str, tuple[int | None, dict[str, Any]]]:
    """``place -> searched value -> n`` (a value: a raw id or an event id) turned into
    ``user -> (total, {"hits": {place: n}})``."""
    owner = owners(users)
    by_user: dict[str, dict[str, int]] = {u.user_id: {} for u in users}
    for place, counts in hits.items():
        for value, n in counts.items():
            if n and value in owner:
                held = by_user[owner[value]]
                held[place] = held.get(place, 0) + n
    return {user: (sum(places.values()), {"hits": places}) for user, places in by_user.items()}


class Verifier:
    """The checks of each participant's store, run together before completion."""

    def __init__(self, checks: Mapping[str, Sequence[StoreCheck]]) -> None:
        self.checks = {name: list(found) for name, found in checks.items()}
        self._threads: ThreadPoolExecutor | None = None
        self._threads_lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        """The threads that read the stores, one per distinct check (made at first use)."""
        with self._threads_lock:
            if self._threads is None:
                distinct = {id(check) for found in self.checks.values() for check in found}
                self._threads = ThreadPoolExecutor(
                    max_workers=max(len(distinct), 1), thread_name_prefix="headwater-verify"
                )
            return self._threads

    def verify(self, user_id: str, subject: str, participants: Sequence[str]) -> dict[str, Finding]:
        """One request's findings, one per participant."""
        return self.verify_many([(Subject(user_id, subject), participants)])[0]

    def verify_many(
        self, requests: Sequence[tuple[Subject, Sequence[str]]]
    ) -> list[dict[str, Finding]]:
        """Each request's findings, one per participant; every store is read once for
        all the requests that wait for it. A store without a check says so."""
        out: list[dict[str, Finding]] = [{} for _ in requests]
        names = sorted({name for _, participants in requests for name in participants})
        # A check that serves several stores (the online store holds the batch's rows
        # too) runs once, for every user any of them waits for.
        runs: dict[int, tuple[str, StoreCheck, dict[str, Subject]]] = {}
        for name in names:
            for check in self.checks.get(name, []):
                _, _, users = runs.setdefault(id(check), (name, check, {}))
                for subject, participants in requests:
                    if name in participants:
                        users[subject.user_id] = subject
        # Each store read in a thread of its own: the reads wait on files, SQLite,
        # DuckDB and Redis, mostly without the GIL, so a pass takes about as long as its
        # slowest store instead of the sum of them all.
        pool = self._pool()
        pending = {
            key: pool.submit(self._run, name, check, list(users.values()))
            for key, (name, check, users) in runs.items()
        }
        done = {key: future.result() for key, future in pending.items()}
        for name in names:
            results = [done[id(check)] for check in self.checks.get(name, [])]
            for i, (subject, participants) in enumerate(requests):
                if name in participants:
                    out[i][name] = self._finding(name, subject, results)
        return out

    @staticmethod
    def _run(name: str, check: StoreCheck, users: Sequence[Subject]) -> CheckResult:
        started = time.monotonic()
        try:
            return check(users)
        except Exception as exc:  # noqa: BLE001 - an unreadable store is not verified
            log.warning("erasure verification of %s failed: %s", name, exc)
            return "check failed", {u.user_id: (1, {"error": f"{exc}"[:500]}) for u in users}
        finally:
            took = time.monotonic() - started
            ERASURE_VERIFY_SECONDS.labels(name).observe(took)
            log.debug("erasure verification of %s for %d users: %.3f s", name, len(users), took)

    @staticmethod
    def _finding(name: str, subject: Subject, results: Sequence[CheckResult]) -> Finding:
        user_id = subject.user_id
        if not results:
            return Finding(
                participant=name,
                method="none: no independent check for this store; its own scan stands",
                residue=None,
                checked_at=now_text(),
            )
        residue: int | None = 0
        details: list[dict[str, Any]] = []
        searched = len(subject.event_ids)
        for _method, per_user in results:
            found, detail = per_user.get(user_id, (0, {}))
            residue = None if found is None or residue is None else residue + found
            details.append(detail)
        return Finding(
            participant=name,
            method="; ".join(method for method, _ in results),
            residue=residue,
            checked_at=now_text(),
            # The audit outlives the raw id: it is never written into a finding.
            detail={
                **_without(details[0] if len(details) == 1 else {"checks": details}, subject),
                "event_ids_searched": searched,
            },
        )


def _without(value: Any, subject: Subject) -> Any:
    """``value`` with every occurrence of the raw id replaced by ``<user id>`` and of an
    event id by ``<event id>``: the audit outlives both."""
    if isinstance(value, str):
        for event_id in subject.event_ids:
            if event_id in value:
                value = value.replace(event_id, "<event id>")
        return value.replace(subject.user_id, "<user id>")
    if isinstance(value, dict):
        return {_without(k, subject): _without(v, subject) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without(v, subject) for v in value]
    return value
