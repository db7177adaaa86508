"""Streaming features: declared once, updated per batch from the bus, read with freshness."""
