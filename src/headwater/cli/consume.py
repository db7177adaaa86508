"""``headwater consume <consumer>``: run one consumer on its own (scale it per partition).

One command per consumer of the registry (``application.consumers.CONSUMERS``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from headwater.application.consumers import CONSUMERS, ConsumerSpec
from headwater.cli._common import HomeOption, MetricsHost, MetricsPort, serve_metrics, settings

if TYPE_CHECKING:
    from headwater.runtime.loop import ConsumerRuntime

__all__ = ["app"]

#: Set by whatever started this consumer as a member beside itself (``members``): the
#: consumer stops, finishing its batch, once that process is gone.
PARENT_PID = "HEADWATER_PARENT_PID"

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
        if until_idle:
            runtime.poll_timeout = 1.0
        parent = os.environ.get(PARENT_PID, "")
        if parent.isdigit():
            _stop_without(int(parent), runtime)
        try:
            runtime.run(idle_exit=until_idle)
        finally:
            app_.close()

    run.__doc__ = spec.summary
    app.command(spec.name)(run)


def _stop_without(parent: int, runtime: ConsumerRuntime) -> None:
    """Stop ``runtime`` once ``parent`` is no longer this process's parent (it died, even by
    SIGKILL, and nothing else would stop this member)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        runtime.stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


for _spec in CONSUMERS:
    _command(_spec)
