from collections.abc import Callable
from datetime import datetime
from typing import Any

from headwater.bus.base import Message
from headwater.contract._compiled import TypedSignal

def encode_records(
    events: list[TypedSignal],
    messages: list[Message],
    entries: list[tuple[str, str]],
    *,
    producer: str,
    received_at: datetime,
    request_id: str,
    encode: Callable[[Any], bytes],
    message: type[Message],
) -> None: ...
