"""Kafka's default partitioner hash (murmur2, as the Java client computes it).

headwater publishes with librdkafka's ``murmur2_random`` partitioner, which places a
keyed record exactly like the Java client; readers use the same function to find the
partition (and so the ``as_of``) of a user.
"""

from __future__ import annotations

__all__ = ["kafka_partition", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash of ``data`` with Kafka's seed, as an unsigned int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a non-empty key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
