"""``headwater batch``: run the nightly batch (or a backfill) and see what it computed."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

import typer

from headwater.cli._common import (
    HomeOption,
    MetricsHost,
    MetricsPort,
    serve_metrics,
    settings,
    wait_until_stopped,
)

__all__ = ["app"]

app = typer.Typer(help="The nightly batch over the archive.", no_args_is_help=True)


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option}: expected YYYY-MM-DD, got {value!r}") from None


@app.command()
def run(
    home: HomeOption = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Backfill: first day (YYYY-MM-DD).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Backfill: last day (YYYY-MM-DD).")] = None,
    until: Annotated[
        str | None, typer.Option(help="Nightly: last day to compute (default yesterday, UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    wait: Annotated[
        str,
        typer.Option(
            help="When another host or process runs the batch, wait this long (e.g. 30m) "
            "for it to finish instead of giving up at once."
        ),
    ] = "0s",
    engine: Annotated[
        str | None,
        typer.Option(
            help="Run the batch's SQL on duckdb (embedded) or spark (default: "
            "HEADWATER_BATCH_ENGINE, else duckdb)."
        ),
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            help="With --engine spark: local[N] or spark://host:port (default: "
            "HEADWATER_SPARK_MASTER, else local[2])."
        ),
    ] = None,
) -> None:
    """Compute changed days and refresh outputs; with --from/--to recompute only those days.

    One run at a time across every host sharing the control plane: a second run says
    who holds the batch lock and since when, and exits 1."""
    import msgspec

    from headwater._duration import parse_duration
    from headwater.application import Application
    from headwater.batch.settings import ENGINES
    from headwater.errors import BatchRunningError, ConfigurationError

    start, end = _day(from_, "--from"), _day(to, "--to")
    if start and end and start > end:
        raise typer.BadParameter("--from is after --to")
    try:
        wait_s = 0.0 if wait.strip() in ("0", "0s") else parse_duration(wait, "--wait")
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None
    if engine is not None and engine.lower() not in ENGINES:
        raise typer.BadParameter(f"--engine: one of {', '.join(ENGINES)}, not {engine!r}")
    with Application(settings(home)) as app_:
        batch = app_.batch_settings
        if engine is not None:
            batch = msgspec.structs.replace(batch, engine=engine.lower())
        if spark_master is not None:
            batch = msgspec.structs.replace(batch, spark_master=spark_master)
        try:
            report = app_.open_batch_runner(batch=batch).run(
                start=start,
                end=end,
                until=_day(until, "--until"),
                progress=None if as_json else typer.echo,
                wait_s=wait_s,
            )
        except BatchRunningError as exc:
            typer.echo(f"not started: {exc}", err=True)
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(report), indent=2))


@app.command()
def schedule(
    home: HomeOption = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run the batch on ``HEADWATER_BATCH_SCHEDULE`` (02:30 UTC by default) until Ctrl-C or
    SIGTERM: what ``headwater up`` does in its process, as a process of its own."""
    import signal
    import threading

    from headwater.application import Application

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Application(settings(home)) as app_:
        serve_metrics(app_, metrics_host, metrics_port)
        scheduler = app_.batch_scheduler()
        scheduler.start()
        try:
            wait_until_stopped(stop)
        finally:
            scheduler.stop(60)


@app.command()
def status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The outputs' window end, computed and waiting days, and the last runs."""
    from headwater.application import Application

    with Application(settings(home)) as app_:
        doc = app_.open_batch_runner().status()
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"outputs as of day: {doc['as_of_day'] or 'never computed'}")
    typer.echo(f"outputs at: {doc['outputs']}")
    lock = doc["lock"]
    if lock is not None:
        typer.echo(
            f"running now: {lock['purpose']} on {lock['host']} (pid {lock['pid']}) since "
            f"{lock['acquired_at']}, lease until {lock['expires_at']}"
        )
    typer.echo(
        f"archive version {doc['archive_version']}, {doc['archive_days']} day(s); "
        f"computed {doc['computed_days']} ({doc['first_day']} .. {doc['last_day']})"
    )
    typer.echo(f"changed since computed: {', '.join(doc['changed_since_computed']) or 'none'}")
    typer.echo(f"not computed yet: {', '.join(doc['not_computed']) or 'none'}")
    for r in doc["runs"]:
        typer.echo(
            f"  run {r['id']:>4} {r['kind']:<8} {r['status']:<7} {r['started_at']} "
            f"{len(r['days'])} day(s) as_of={r['as_of']}"
        )
