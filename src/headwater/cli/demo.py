"""``headwater demo`` and ``headwater up``: the embedded stack, with or without traffic."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer

from headwater._url import check_listenable
from headwater.cli._common import HomeOption, freeze_startup, settings, wait_until_stopped
from headwater.config import Settings
from headwater.errors import HeadwaterError
from headwater.wire import read_problem

if TYPE_CHECKING:
    from headwater.stack import EmbeddedStack

__all__ = ["register"]


def _percentile_from_histogram(q: float) -> float | None:
    from headwater.metrics import FRESHNESS_SECONDS

    buckets: dict[float, float] = {}
    for metric in FRESHNESS_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    if not buckets or max(buckets.values()) == 0:
        return None
    total = buckets[float("inf")]
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None


def _bound(value: float | None) -> str:
    # Histogram buckets give an upper bound, shown as such.
    return f"<{value:g}s" if value is not None else "-"


def _offline_and_erasure(stack: EmbeddedStack, user: str, keys: dict[str, str]) -> None:
    """The nightly batch (run now), recommendations, then the user's erasure and its audit,
    each over HTTP with the key of the role it needs."""
    from headwater.cli.deletions import print_audit

    typer.echo("\nnightly batch over the Delta archive (run now for the demo):")
    time.sleep(1.0)  # the archive consumer flushes within its flush interval
    runner = stack.app.open_batch_runner()
    runner.run(until=datetime.now(UTC).date(), progress=lambda line: typer.echo(f"  {line}"))
    reco = _get_json(
        f"{stack.url}/v1/users/{user}/recommendations",
        keys["reader"],
        params={"k": 5, "surface": "web"},
    )
    typer.echo(f"\nrecommendations for {user} (GET /v1/users/{user}/recommendations?k=5):")
    for item in reco.get("items", []):
        typer.echo(f"  {item['item_id']:<10} {item['score']:>8.3f}  {item['reason']}")
    if reco.get("stale"):
        typer.echo(f"  (streaming features stale: {reco.get('note', '')})")

    typer.echo(f"\nerasing {user} from every store (POST /v1/deletions, privacy key) ...")
    privacy = _bearer(keys["privacy"])
    created = httpx.post(
        f"{stack.url}/v1/deletions",
        json={"user_id": user, "legal_basis": "gdpr-art17", "reference": "DEMO-1"},
        headers=privacy,
        timeout=10,
    )
    _expect(created, 202, "POST /v1/deletions")
    request_id = created.json()["request_id"]
    deadline = time.monotonic() + 60
    audit = created.json()
    while time.monotonic() < deadline and audit["status"] != "completed":
        time.sleep(0.25)
        audit = _get_json(f"{stack.url}/v1/deletions/{request_id}", keys["privacy"])
    print_audit(audit)
    gone = _get_json(f"{stack.url}/v1/users/{user}/features", keys["reader"])
    typer.echo(f"features of {user} after the erasure (reader key): found={gone['found']}")


def _evolve_rating(stack: EmbeddedStack, key: str) -> None:
    """The reviews team's contracts key registers the next version of the type it owns:
    ``rating`` with one optional field more (a compatible change)."""
    import yaml

    shipped = resources.files("headwater.contract") / "defaults" / "reviews.yaml"
    doc = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    doc["event_types"]["rating"]["payload"]["photo_count"] = {"type": "int", "min": 0}
    answer = httpx.post(f"{stack.url}/v1/contracts", json=doc, headers=_bearer(key), timeout=10)
    _expect(answer, 201, "POST /v1/contracts")
    changed = ", ".join(f"{c['name']} v{c['version']}" for c in answer.json()["changed"])
    typer.echo(
        f"\nthe reviews team's contracts key adds an optional field to rating "
        f"(POST /v1/contracts): registered {changed}"
    )


def _expect(answer: httpx.Response, status: int, what: str) -> None:
    """Raise with the problem document's kind and detail unless ``answer`` has ``status``."""
    if answer.status_code != status:
        problem = read_problem(answer.status_code, answer.content)
        raise HeadwaterError(f"{what}: HTTP {answer.status_code} {problem.kind}: {problem.detail}")


def _get_json(url: str, key: str, params: dict[str, str | int] | None = None) -> Any:
    """The JSON answer of a GET with ``key``; an error answer raises with its problem."""
    answer = httpx.get(url, params=params, headers=_bearer(key), timeout=10)
    _expect(answer, 200, f"GET {url}")
    return answer.json()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _role_keys(stack: EmbeddedStack) -> dict[str, str]:
    """One key per role the demo plays, beside the six teams' producer keys."""
    made = {
        "reader": stack.app.keys.create("recommendations", roles=("reader",), kind="service"),
        "privacy": stack.app.keys.create("privacy-office", roles=("privacy",)),
        "operator": stack.app.keys.create("sre", roles=("operator",)),
        "contracts": stack.app.keys.create("reviews", roles=("contracts",)),
    }
    typer.echo(
        "keys, one per role: a producer key for each of the six teams (its event types),\n"
        "  reader (the recommendation service), privacy (erasure requests and audits),\n"
        "  contracts (the reviews team's schema owners),\n"
        f"  operator (log in to {stack.url}/dashboard with: {made['operator'][0]})"
    )
    return {role: secret for role, (secret, _) in made.items()}


def demo(
    home: Annotated[
        str, typer.Option(help="Data directory for the demo (wiped first).")
    ] = ".headwater/demo",
    seconds: Annotated[float, typer.Option(help="How long the teams publish.")] = 12.0,
    rate: Annotated[float, typer.Option(help="Target events per second, all teams.")] = 4000.0,
    invalid_rate: Annotated[float, typer.Option(help="Share of broken events.")] = 0.03,
    port: Annotated[int, typer.Option(help="Port of the embedded API.")] = 8089,
) -> None:
    """Start the embedded stack, let six teams publish, then show a user's fresh features."""
    from headwater.demo.live import JOURNEY_USER, TeamTraffic, publish_journey
    from headwater.stack import EmbeddedStack

    # The demo prints its own report; only errors of the stack itself go to stderr.
    logging.getLogger().setLevel(logging.ERROR)
    root = Path(home)
    if root.exists():
        shutil.rmtree(root)
    stack = EmbeddedStack(Settings.from_env(root), port=port)
    typer.echo(f"headwater embedded stack on {stack.url} (SQLite bus, SQLite online store)")
    stack.start()
    keys = _role_keys(stack)
    teams = TeamTraffic(stack.app.keys, stack.url, rate=rate, invalid_rate=invalid_rate)
    try:
        teams.start()
        typer.echo(
            f"six teams publishing ~{rate:g} events/s for {seconds:g}s "
            f"({invalid_rate:.0%} broken on purpose)\n"
        )
        typer.echo(
            f"{'t':>4} {'accepted':>9} {'rejected':>9} {'lag':>6} "
            f"{'fresh p50':>10} {'fresh p99':>10}"
        )
        started = time.monotonic()
        journey_at = seconds / 2
        journey_done = False
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(1.0)
            p = teams.progress
            lag = sum(x.lag_events for x in stack.app.bus.lag("features"))
            p50, p99 = _percentile_from_histogram(0.5), _percentile_from_histogram(0.99)
            typer.echo(
                f"{elapsed:>3.0f}s {p.accepted:>9} {p.rejected:>9} {lag:>6} "
                f"{_bound(p50):>10} {_bound(p99):>10}"
            )
            if not journey_done and elapsed >= journey_at:
                publish_journey(stack.url, teams.key("web"))
                journey_done = True
        teams.stop()
        time.sleep(0.5)
        answer = _get_json(f"{stack.url}/v1/users/{JOURNEY_USER}/features", keys["reader"])
        typer.echo(
            f"\nfeatures of {JOURNEY_USER} (GET {stack.url}/v1/users/{JOURNEY_USER}/features, "
            "reader key):"
        )
        typer.echo(json.dumps(answer, indent=2))
        typer.echo(
            f"\nas_of {answer['as_of']}, age {answer['age_s']}s: "
            f"{'STALE ' + ','.join(answer['stale_features']) if answer['stale'] else 'fresh'}"
            " (within every feature's freshness budget)" * (not answer["stale"])
        )
        p = teams.progress
        typer.echo(
            f"\npublished: {p.accepted} accepted, {p.rejected} rejected, {p.duplicates} duplicates"
        )
        typer.echo("rejections by reason (one example each):")
        for rule, count in sorted(p.reasons.items(), key=lambda kv: -kv[1]):
            ex = p.examples[rule]
            typer.echo(
                f"  {rule:<26}{count:>6}  e.g. {ex['team']}: {ex['field'] or '<event>'}:"
                f" {ex['message'][:90]}"
            )
        _evolve_rating(stack, keys["contracts"])
        _offline_and_erasure(stack, JOURNEY_USER, keys)
    finally:
        teams.stop()
        stack.stop()


def up(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8080,
    processes: Annotated[
        bool,
        typer.Option(
            "--processes",
            help="One process per component (gateway, each consumer, orchestrator) on the "
            "same data: uses every core. Default: one process, every component a thread.",
        ),
    ] = False,
) -> None:
    """Run the whole embedded stack until Ctrl-C or SIGTERM."""
    check_listenable(host, port)  # a taken port: one line, before anything is created
    if not processes:
        _share_metrics(settings(home))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    if processes:
        _up_processes(settings(home), host, port, stopping)
        return
    from headwater.stack import EmbeddedStack

    stack = EmbeddedStack(settings(home), host=host, port=port)
    stack.start()
    freeze_startup()
    _show_admin_key(stack.admin_key)
    typer.echo(
        f"headwater up on {stack.url}  (data in {stack.settings.home})\n"
        f"  create keys:  headwater keys create <team> --role producer  (or reader, privacy,\n"
        f"                contracts, operator, admin)\n"
        f"  publish:  POST {stack.url}/v1/signals\n"
        f"  read:     GET  {stack.url}/v1/users/<user_id>/features\n"
        f"  API docs: {stack.url}/docs"
    )
    wait_until_stopped(stopping)
    typer.echo("stopping: consumers finish their batch and commit ...")
    stack.stop()


def _share_metrics(cfg: Settings) -> None:
    """Start again in prometheus-client's multiprocess mode (``<home>/metrics``, emptied)
    when the feature consumer may run members beside this process's thread: their
    metrics then reach this process's ``/metrics`` (``stack``). The mode is chosen when
    prometheus-client is imported, before anything here runs, hence a new image."""
    import os
    import sys

    from headwater.bus import open_bus
    from headwater.members import feature_members
    from headwater.metrics.exposition import fresh_multiprocess_dir, multiprocess_dir

    if multiprocess_dir() is not None or sys.argv[1:2] != ["up"]:
        return  # already shared, or not the command line's own ``up`` (a test's runner)
    bus = open_bus(cfg.bus_url)
    try:
        partitions = bus.partitions
    finally:
        bus.close()
    if feature_members(cfg, partitions)[1] <= 1:
        return
    directory = fresh_multiprocess_dir(cfg.home / "metrics")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "headwater", *sys.argv[1:]])  # noqa: S606


def _show_admin_key(secret: str | None) -> None:
    if secret:
        typer.echo(
            "a new control plane: an admin key was created (shown this once; keep it safe)\n"
            f"  admin key: {secret}\n"
            "  use it to create the other keys: headwater keys create, or POST /v1/admin/keys"
        )


def _up_processes(cfg: Settings, host: str, port: int, stopping: threading.Event) -> None:
    from headwater.supervisor import Supervisor

    supervisor = Supervisor(cfg, host=host, port=port)
    try:
        supervisor.start()
        typer.echo(
            f"headwater up on {supervisor.url}  (data in {cfg.home}; one process per "
            f"component: {', '.join(supervisor.children)})"
        )
        _show_admin_key(supervisor.admin_key)
        supervisor.watch(stopping)
        typer.echo("stopping: each process finishes its batch and commits ...")
    finally:
        supervisor.stop()


def register(app: typer.Typer) -> None:
    """Add demo and up to the CLI."""
    app.command()(demo)
    app.command()(up)
