"""What the control plane keeps of the contracts: every version of every event type."""

from __future__ import annotations

from headwater.registry.contracts import ChangePlan, ContractRegistry

__all__ = ["ChangePlan", "ContractRegistry"]
