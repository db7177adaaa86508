"""A batch of bus records as the feature pass reads it: columns, grouped by user.

``decode_batch`` turns a consumer's batch of records into one ``SignalBatch``: each
field the features read in a column of its own (event ids, types, items, surfaces,
event times in milliseconds, payloads still encoded), the events of one user next to
each other in bus order, and the batch's bookkeeping (the last record applied per
partition, the records skipped as already applied, each publish request's events
per type for freshness). The pass walks a user's slice of the columns: no object per
signal.

Where ``_records`` is compiled (setup.py) it reads the records' bytes in C; where it
is not, or for a batch it does not take (``UnsupportedRecordError``), the records are
decoded here with msgspec into the same columns, and a malformed record gets msgspec's
error. A property test holds both readers to the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

import msgspec

from headwater.bus.base import Record
from headwater.contract.signal import Signal, defstruct_fields, record_decoder
from headwater.features._pass import event_ms
from headwater.features.kinds import SignalView

try:
    from headwater.features._records import UnsupportedRecordError, read_batch

    #: True when the compiled reader of signal records is built and importable.
    COMPILED = True
except ImportError:  # installed where no C compiler was found: msgspec and Python
    COMPILED = False

__all__ = ["COMPILED", "Run", "SignalBatch", "StreamSignal", "decode_batch", "decode_stream_signal"]

#: The events of one publish request: producer, receive time (seconds since the epoch,
#: None when the envelope has none), request id, and its events per type in the batch.
Run = tuple[str, float | None, str, dict[str, int]]


#: The batch's columns: the compiled reader leaves them unset, and a first read makes them.
_COLUMNS = frozenset(("event_ids", "types", "items", "surfaces", "times", "payloads"))


class SignalBatch:
    """One batch of signals in columns, each user's events contiguous and in bus order.

    User ``users[k]`` has the events ``starts[k]`` up to ``starts[k + 1]`` of every
    column. ``payloads`` holds each payload's MessagePack bytes (a feature that reads
    the payload decodes it; most events feed none). The compiled reader leaves the
    events in ``raw`` (``_records.Columns``, no Python object per event) and the columns
    unset: the first read of one makes them all (``__getattr__``), and after that they
    are plain attributes. The pass over stored rows in C (``_rows``) reads ``raw`` and
    never asks for them.
    """

    __slots__ = (
        "event_ids",
        "items",
        "last",
        "payloads",
        "raw",
        "runs",
        "skipped",
        "starts",
        "surfaces",
        "times",
        "types",
        "users",
    )

    event_ids: list[str]
    types: list[str]
    items: list[str | None]
    surfaces: list[str]
    times: list[int]  # event time, ms since the epoch (as ``event_ms``)
    payloads: list[Any]  # bytes-like: MessagePack of the payload

    def __init__(self) -> None:
        self.users: list[str] = []
        self.starts: list[int] = [0]
        self.event_ids = []
        self.types = []
        self.items = []
        self.surfaces = []
        self.times = []
        self.payloads = []
        #: The events as the compiled reader left them, while the columns are unset.
        self.raw: Any = None
        #: The last record applied of each partition.
        self.last: dict[int, Record] = {}
        #: Records below the stored positions: applied before, not read again.
        self.skipped = 0
        #: Per publish request, its events per type (None when not asked for): one entry
        #: for all the request's runs, in the order the requests first appear.
        self.runs: list[Run] | None = None

    def __getattr__(self, name: str) -> Any:
        # Reached only for an attribute not set: the columns of a batch the compiled
        # reader left in ``raw`` are made now, all at once.
        raw = object.__getattribute__(self, "raw")
        if name not in _COLUMNS or raw is None:
            raise AttributeError(name)
        self.raw = None
        raw.fill(self)
        return object.__getattribute__(self, name)

    def __len__(self) -> int:
        return int(self.raw.n) if self.raw is not None else len(self.event_ids)


def _stream_decoder() -> Callable[[bytes], StreamSignal]:
    # Mirrors Signal field by field, so the contract stays defined in one place. Most
    # events feed no feature that reads the payload: it stays encoded (msgspec.Raw).
    empty_map = msgspec.Raw(b"\x80")
    fields = [
        ("payload", msgspec.Raw, empty_map) if spec[0] == "payload" else spec
        for spec in defstruct_fields(Signal)
    ]
    rename = {f.name: f.encode_name for f in msgspec.structs.fields(Signal)}
    lazy = msgspec.defstruct(
        "StreamSignal", fields, frozen=True, gc=False, rename=rename, module=__name__
    )
    return cast("Callable[[bytes], StreamSignal]", record_decoder(lazy))


class StreamSignal(SignalView, Protocol):
    """A signal as the consumer decodes it: ``Signal``'s fields, the payload still encoded."""

    @property
    def user_id(self) -> str: ...
    @property
    def producer(self) -> str: ...
    @property
    def received_at(self) -> datetime | None: ...
    @property
    def request_id(self) -> str: ...


#: A signal from the bus's bytes, its payload left encoded.
decode_stream_signal = _stream_decoder()


def decode_batch(
    records: Sequence[Record],
    stored: Mapping[int, int],
    *,
    runs: bool = True,
    compiled: bool = COMPILED,
) -> SignalBatch:
    """The records at or after ``stored`` (the next offset to apply, per partition) as
    one batch; ``runs`` gathers the publish runs for freshness. ``compiled=False``
    takes the Python path."""
    if compiled and records:
        try:
            return cast("SignalBatch", read_batch(records, stored, runs, SignalBatch()))
        except UnsupportedRecordError:
            pass  # msgspec decodes this batch, and refuses a malformed record
    return _python_batch(records, stored, runs=runs)


def _python_batch(
    records: Sequence[Record], stored: Mapping[int, int], *, runs: bool
) -> SignalBatch:
    batch = SignalBatch()
    by_user: dict[str, list[StreamSignal]] = {}
    out: list[Run] | None = [] if runs else None
    types: dict[str, int] = {}
    at: datetime | None = None
    producer = request = ""
    # A publish request's events lie in one run per partition, and another request's
    # events can cut a run: a request's runs are counted together.
    counted: dict[tuple[str, float | None, str], dict[str, int]] = {}
    for r in records:
        next_offset = stored.get(r.partition)
        if next_offset is not None and r.offset < next_offset:
            batch.skipped += 1  # applied before a crash; its position was stored with the row
            continue
        sig = decode_stream_signal(r.value)
        bucket = by_user.get(sig.user_id)
        if bucket is None:
            by_user[sig.user_id] = [sig]
        else:
            bucket.append(sig)
        batch.last[r.partition] = r
        if out is not None:
            if sig.received_at != at or sig.request_id != request or sig.producer != producer:
                at, request, producer = sig.received_at, sig.request_id, sig.producer
                key = (producer, None if at is None else at.timestamp(), request)
                found = counted.get(key)
                if found is None:
                    found = counted[key] = {}
                    out.append((*key, found))
                types = found
            types[sig.event_type] = types.get(sig.event_type, 0) + 1
    for user, signals in by_user.items():
        batch.users.append(user)
        for sig in signals:
            batch.event_ids.append(sig.event_id)
            batch.types.append(sig.event_type)
            batch.items.append(sig.item_id)
            batch.surfaces.append(sig.surface)
            batch.times.append(event_ms(sig.timestamp))
            batch.payloads.append(sig.payload)
        batch.starts.append(len(batch.event_ids))
    batch.runs = out
    return batch
