"""``headwater delete``, ``headwater deletions`` and ``headwater orchestrate``."""

from __future__ import annotations

import getpass
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from headwater.cli._common import HomeOption, MetricsHost, MetricsPort, application, serve_metrics
from headwater.erasure.legal import LEGAL_BASES
from headwater.erasure.orchestrator import ErasureOrchestrator

__all__ = ["app", "print_audit", "register"]

app = typer.Typer(help="Erasure requests and their audit.", no_args_is_help=True)


@contextmanager
def _orchestrator(home: str | None) -> Iterator[ErasureOrchestrator]:
    with application(home) as app_:
        yield app_.orchestrator


def _evidence_note(evidence: dict[str, Any], error: str | None) -> str:
    # The most telling fact of each store's evidence, in words; --json has all of it.
    if error:
        return f"error: {error}"
    notes = (
        ("gone_by", "cannot delete records; retention removes them by {}"),
        ("physically_removed_at", "files removed from storage at {}"),
        ("physically_removed_by", "old files physically removed by {}"),
        ("vacuumed_at", "old files vacuumed at {}"),
    )
    for key, text in notes:
        if evidence.get(key):
            return text.format(evidence[key])
    if evidence.get("partitions_recomputed") is not None:
        days = evidence["partitions_recomputed"]
        return f"recomputed days: {', '.join(days) if days else 'none'}"
    return str(evidence.get("scan", ""))


def print_audit(audit: dict[str, Any]) -> None:
    """The audit as a table: the request, then one row per store."""
    remaining = audit["time_remaining_s"]
    typer.echo(
        f"request  {audit['request_id']}  ({audit['status']})\n"
        f"subject  {audit['subject_hash'][:16]}... (keyed hash)\n"
        f"basis    {audit['legal_basis']}"
        + (f" (ref {audit['reference']})" if audit["reference"] else "")
        + f", asked by {audit['requested_by'] or '-'}\n"
        f"received {audit['received_at']}\n"
        f"deadline {audit['deadline']}"
        + (f"  ({remaining / 86400:.1f} days left)" if remaining is not None else "")
        + ("  PAST DEADLINE" if audit["past_deadline"] else "")
    )
    if audit["completed_at"]:
        late = f"  LATE by {audit['late_by_s']:.0f}s" if audit.get("completed_late") else ""
        typer.echo(f"completed {audit['completed_at']}{late}")
    if audit.get("verified_at"):
        typer.echo(
            f"verified {audit['verified_at']}  (every store checked again by a path of its "
            "own: nothing of the user found)"
        )
    typer.echo(
        f"\n{'store':<20}{'status':<11}{'tries':>5}  {'confirmed_at':<33}{'method':<16}"
        f"{'removed':>8}  evidence"
    )
    for s in audit["stores"]:
        note = _evidence_note(s["evidence"] or {}, s["error"])
        typer.echo(
            f"{s['participant']:<20}{s['status']:<11}{s['attempts']:>5}  "
            f"{s['confirmed_at'] or '-':<33}{s['method'] or '-':<16}"
            f"{s['rows_removed'] if s['rows_removed'] is not None else '-':>8}  {note}"
        )
    typer.echo(f"\n{audit['confirmed']} confirmed, {audit['outstanding']} outstanding")


def delete(
    user_id: str,
    basis: Annotated[
        str, typer.Option("--basis", help=f"The legal basis: {', '.join(LEGAL_BASES)}.")
    ],
    home: HomeOption = None,
    reference: Annotated[
        str | None, typer.Option(help="A ticket or case id (kept in the audit; no free text).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Erase USER_ID from every store headwater fed; prints the request to follow."""
    with _orchestrator(home) as orch:
        record = orch.request(
            user_id,
            legal_basis=basis,
            reference=reference,
            requested_by=f"cli:{getpass.getuser()}",
        )
        audit = orch.audit(record.request_id)
    if as_json:
        typer.echo(json.dumps(audit, indent=2))
        return
    print_audit(audit)
    typer.echo(f"\nfollow it: headwater deletions show {record.request_id}")


@app.command()
def show(
    request_id: str,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One request: status, deadline, and one row per store."""
    with _orchestrator(home) as orch:
        audit = orch.audit(request_id)
    if as_json:
        typer.echo(json.dumps(audit, indent=2))
    else:
        print_audit(audit)


@app.command("list")
def list_(
    home: HomeOption = None,
    status: Annotated[str, typer.Option(help="open, completed or all.")] = "open",
) -> None:
    """Requests with their confirmed and outstanding stores."""
    with _orchestrator(home) as orch:
        ids = orch.ledger.request_ids(status=None if status == "all" else status)
        for rid in ids:
            a = orch.audit(rid)
            late = [s["participant"] for s in a["stores"] if s["status"] in ("overdue", "failed")]
            typer.echo(
                f"{rid}  {a['status']:<10} {a['confirmed']}/{len(a['stores'])} confirmed"
                + (f"  overdue: {','.join(late)}" if late else "")
            )
        typer.echo(f"{len(ids)} request(s)")


@app.command()
def export(
    request_id: str,
    out: Annotated[Path, typer.Option(help="File to write.")],
    home: HomeOption = None,
) -> None:
    """Write a request's erasure record as JSON, for a regulator: every store with its
    method, evidence, verification and attempts, and what cannot be erased at once."""
    with _orchestrator(home) as orch:
        doc = orch.export(request_id)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {out}")


@app.command()
def verify(
    request_id: str,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check every store of a request again, independently of the stores' own scans."""
    with _orchestrator(home) as orch:
        found = orch.verify(request_id)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if found.get("note"):
        typer.echo(found["note"])
    for name, finding in sorted((found["findings"] or {}).items()):
        residue = finding["residue"]
        state = "clean" if residue == 0 else "not checkable" if residue is None else "RESIDUE"
        typer.echo(
            f"{name:<20}{state:<14}{residue if residue is not None else '-':>6}  "
            f"{finding['method']}"
        )
    if found.get("clean") is False:
        raise typer.Exit(1)


def orchestrate(
    home: HomeOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 1.0,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run the erasure orchestrator (close, chase, alert) and the freshness SLO watch."""
    import signal

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    app_ = application(home)
    try:
        serve_metrics(app_, metrics_host, metrics_port)
    except BaseException:
        app_.close()
        raise
    monitor = threading.Thread(target=app_.slo_monitor().run, args=(stop,), daemon=True)
    monitor.start()
    try:
        app_.orchestrator.run(stop, interval_s=interval)
    finally:
        monitor.join(30)
        app_.close()


def register(root: typer.Typer) -> None:
    """Add delete, deletions and orchestrate to the CLI."""
    root.command()(delete)
    root.command()(orchestrate)
    root.add_typer(app, name="deletions")
