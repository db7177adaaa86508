"""Producer access: API keys scoped to event types and surfaces, and rate limits."""
