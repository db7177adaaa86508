"""The HTTP gateway: producers publish here; the API reads features and erasure audits here."""
