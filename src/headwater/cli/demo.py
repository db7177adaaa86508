"""``headwater demo``: six teams publish a realistic mix; see what the contract does with it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Annotated

import msgspec
import typer

from headwater.cli._common import ControlUrl, HomeOption, open_registry
from headwater.contract.loader import default_definitions
from headwater.contract.validator import Rejection, SignalValidator
from headwater.demo.traffic import TEAMS, Traffic

__all__ = ["register"]


def demo(
    home: HomeOption = None,
    control: ControlUrl = None,
    events: Annotated[int, typer.Option(help="Events per team.")] = 500,
    invalid_rate: Annotated[float, typer.Option(help="Share of broken events.")] = 0.04,
    seed: Annotated[int, typer.Option(help="Seed of the simulated traffic.")] = 7,
) -> None:
    """Validate a sample of signals from six teams and print the accepted/rejected report."""
    registry = open_registry(home, control)
    plan = registry.apply(default_definitions(), partial=True)
    if plan.added:
        typer.echo(f"registered the default contracts: {', '.join(plan.added)}")
    validator = SignalValidator(registry.current())
    traffic = Traffic(seed=seed, invalid_rate=invalid_rate)
    per_team: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    example: dict[str, tuple[str, Rejection]] = {}
    for team in TEAMS:
        remaining = events
        while remaining > 0:
            size = min(remaining, validator.limits.max_batch_events)
            remaining -= size
            result = validator.validate_events(traffic.batch(size, team))
            per_team[team]["accepted"] += len(result.accepted)
            per_team[team]["rejected"] += len(result.rejections)
            for rej in result.rejections:
                reasons[rej.rule] += 1
                example.setdefault(rej.rule, (team, rej))
    typer.echo(f"\n{'team':<10}{'accepted':>10}{'rejected':>10}")
    for team, counts in per_team.items():
        typer.echo(f"{team:<10}{counts['accepted']:>10}{counts['rejected']:>10}")
    total_ok = sum(c["accepted"] for c in per_team.values())
    total_bad = sum(c["rejected"] for c in per_team.values())
    typer.echo(f"{'total':<10}{total_ok:>10}{total_bad:>10}\n")
    typer.echo("rejections by reason (one example each):")
    for rule, count in reasons.most_common():
        team, rej = example[rule]
        typer.echo(
            f"  {rule:<26}{count:>5}  e.g. {team} event #{rej.index} "
            f"({rej.event_id or 'no event_id'}): {rej.field or '<event>'}: {rej.message}"
        )
    if reasons:
        team, rej = example[reasons.most_common(1)[0][0]]
        typer.echo("\none rejection as a producer receives it:")
        typer.echo(json.dumps(msgspec.to_builtins(rej), indent=2))


def register(app: typer.Typer) -> None:
    """Add the demo command to the CLI."""
    app.command()(demo)
