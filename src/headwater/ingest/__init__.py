"""Ingestion: validate a producer's batch, drop re-sent events, publish the rest durably."""
