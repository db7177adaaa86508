"""``headwater consume <consumer>``: run one consumer on its own (scale it per partition)."""

from __future__ import annotations

from typing import Annotated

import typer

from headwater.cli._common import HomeOption, settings

__all__ = ["app"]

app = typer.Typer(help="Run one consumer of the bus on its own.", no_args_is_help=True)

IdleExit = Annotated[
    bool, typer.Option("--until-idle", help="Exit once caught up (for jobs and tests).")
]


@app.command()
def features(
    home: HomeOption = None,
    until_idle: IdleExit = False,
    batch_size: Annotated[
        int | None, typer.Option(help="Records per batch at most (default 50000).")
    ] = None,
) -> None:
    """The streaming feature consumer: keeps user feature rows in the online store."""
    from headwater.stack import feature_runtime

    runtime = feature_runtime(settings(home), batch_size=batch_size)
    if until_idle:
        runtime.poll_timeout = 1.0
    runtime.run(idle_exit=until_idle)


@app.command("platform-erasure")
def platform_erasure(home: HomeOption = None, until_idle: IdleExit = False) -> None:
    """Erasure of the bus log, the dead letters and the idempotency window."""
    from headwater.stack import platform_runtime

    runtime = platform_runtime(settings(home))
    runtime.run(idle_exit=until_idle)


@app.command("batch-erasure")
def batch_erasure(home: HomeOption = None, until_idle: IdleExit = False) -> None:
    """The batch-derived erasure participant: recomputes what the batch derived from a user."""
    from headwater.batch import batch_erasure_runtime

    runtime = batch_erasure_runtime(settings(home))
    runtime.run(idle_exit=until_idle)
