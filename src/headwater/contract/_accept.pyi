from datetime import datetime

from headwater.contract._compiled import TypedSignal

def accepts(
    events: list[TypedSignal], oldest: datetime, newest: datetime, unset: object
) -> bool: ...
