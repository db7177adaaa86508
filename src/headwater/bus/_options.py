"""Options every bus backend reads from its URL's query string."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qs, urlsplit

import msgspec

from headwater._duration import parse_duration
from headwater.errors import ConfigurationError

__all__ = ["BusOptions"]

DEFAULT_PARTITIONS = 8
DEFAULT_TOPIC = "headwater.signals"
DEFAULT_RETENTION_S = 7 * 86400.0


class BusOptions(msgspec.Struct, frozen=True, kw_only=True):
    """``?partitions=8&retention=7d&topic=headwater.signals`` and backend extras."""

    partitions: int = DEFAULT_PARTITIONS
    retention_s: float = DEFAULT_RETENTION_S
    topic: str = DEFAULT_TOPIC
    extra: dict[str, str] = {}
    #: The partition count was asked for (in the URL or by the caller), not defaulted: an
    #: existing log with another count is then an error, not silently used.
    partitions_given: bool = False

    @classmethod
    def from_url(
        cls, url: str, *, partitions: int | None = None, retention_s: float | None = None
    ) -> BusOptions:
        """Options from a URL's query, overridden by explicit arguments."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
        given = partitions is not None or "partitions" in query
        try:
            parts = int(query.pop("partitions", DEFAULT_PARTITIONS))
        except ValueError:
            raise ConfigurationError(f"{url}: partitions must be a whole number") from None
        retention = parse_duration(query.pop("retention", DEFAULT_RETENTION_S), f"{url} retention")
        topic = query.pop("topic", DEFAULT_TOPIC)
        parts = partitions if partitions is not None else parts
        if parts < 1:
            raise ConfigurationError(f"{url}: partitions must be at least 1")
        return cls(
            partitions=parts,
            retention_s=retention_s if retention_s is not None else retention,
            topic=topic,
            extra=query,
            partitions_given=given,
        )

    def refuse_unknown(self, url: str, known: Collection[str], prefix: str = "") -> None:
        """A ``ConfigurationError`` naming the URL options this backend does not read
        (``known``, besides partitions, retention and topic; any ``prefix``-ed one): a
        misspelt option is an error, not a default silently used."""
        unknown = sorted(
            k for k in self.extra if k not in known and not (prefix and k.startswith(prefix))
        )
        if unknown:
            also = f" and {prefix}<setting>" if prefix else ""
            raise ConfigurationError(
                f"{url}: unknown option(s) {unknown}; known: "
                f"{['partitions', 'retention', 'topic', *known]}{also}"
            )
