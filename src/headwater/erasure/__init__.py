"""Erasure: deletion requests as events on the bus, confirmations, the ledger and the audit."""
