"""``headwater consume <consumer>``: run one consumer on its own (scale it per partition).

One command per consumer of the registry (``application.consumers.CONSUMERS``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from headwater.application.consumers import CONSUMERS, ConsumerSpec
from headwater.cli._common import (
    HomeOption,
    MetricsHost,
    MetricsPort,
    freeze_startup,
    serve_metrics,
    settings,
)

__all__ = ["app"]

app = typer.Typer(help="Run one consumer of the bus on its own.", no_args_is_help=True)

IdleExit = Annotated[
    bool, typer.Option("--until-idle", help="Exit once caught up (for jobs and tests).")
]
BatchSize = Annotated[
    int | None, typer.Option(help="Records per batch at most (default: the consumer's own).")
]


def _command(spec: ConsumerSpec) -> None:
    def run(
        home: HomeOption = None,
        until_idle: IdleExit = False,
        batch_size: BatchSize = None,
        metrics_port: MetricsPort = None,
        metrics_host: MetricsHost = "127.0.0.1",
    ) -> None:
        from headwater.application import Application

        app_ = Application(settings(home))
        try:
            app_.check_ready()  # an unreachable backend: one line naming it, in seconds
            serve_metrics(app_, metrics_host, metrics_port)
        except BaseException:
            app_.close()
            raise
        runtime = spec.build(app_, batch_size)
        freeze_startup()
        if until_idle:
            runtime.poll_timeout = 1.0
        try:
            runtime.run(idle_exit=until_idle)
        finally:
            app_.close()

    run.__doc__ = spec.summary
    app.command(spec.name)(run)


for _spec in CONSUMERS:
    _command(_spec)
