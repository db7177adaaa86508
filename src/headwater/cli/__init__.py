"""The ``headwater`` command line."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import typer

from headwater._extras import extra_for
from headwater.cli import archive as archive_cli
from headwater.cli import batch as batch_cli
from headwater.cli import bus, consume, contracts, deletions, demo, producers, serve, status
from headwater.cli import features as features_cli
from headwater.errors import HeadwaterError
from headwater.logs import configure_logging

__all__ = ["PARENT_PID", "app", "main"]

#: Allocations of tracked objects between two runs of the cyclic garbage collector's
#: youngest generation in a headwater process (Python's default is 700). Concurrent
#: publishes of 500 events hold thousands at once (tuples, lists, dicts, frames): at 700,
#: 1,440 publishes to one gateway ran 937 young, 85 middle and 5 full collections (the
#: full ones 45 ms each); at 20,000, one. perf put the collector at about 6% of the
#: gateway's CPU, and this pace cut its CPU per event by about a tenth (BENCHMARKS.md).
#: The older generations keep their default ratios to it.
_COLLECT_EVERY = 20_000

#: Set by a process that starts headwater commands beside itself (the supervisor of ``up
#: --processes``, the feature consumer's added members): the command stops as on SIGTERM
#: (finishing its batch, its requests) once that process is gone, even killed by SIGKILL.
PARENT_PID = "HEADWATER_PARENT_PID"

app = typer.Typer(
    name="headwater",
    help="One contract, one bus, fresh features and provable erasure for interaction signals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(contracts.app, name="contracts")
app.add_typer(bus.bus_app, name="bus")
app.add_typer(bus.dlq_app, name="dlq")
app.add_typer(producers.app, name="producers")
app.add_typer(producers.keys_app, name="keys")
app.add_typer(consume.app, name="consume")
app.add_typer(batch_cli.app, name="batch")
app.add_typer(archive_cli.app, name="archive")
app.add_typer(features_cli.app, name="features")
serve.register(app)
status.register(app)
deletions.register(app)
demo.register(app)


def main() -> None:
    """Entry point: run the CLI, turning headwater errors into a message and exit code 1."""
    _, *older = gc.get_threshold()
    gc.set_threshold(_COLLECT_EVERY, *older)
    configure_logging()
    _stop_with_parent()
    try:
        app()
    except HeadwaterError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except ModuleNotFoundError as exc:
        # An optional package that is not installed: name the extra that brings it.
        missing = extra_for(exc)
        if missing is None:
            raise
        typer.echo(f"error: {missing}", err=True)
        raise SystemExit(1) from None


def _stop_with_parent() -> None:
    parent = os.environ.pop(PARENT_PID, "")  # for this process only, not what it starts
    if not parent.isdigit():
        return
    pid = int(parent)

    def watch() -> None:
        # Already gone (its pid is not this process's parent): stop at once.
        while os.getppid() == pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
