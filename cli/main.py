"""The `payments` console script: worker, migrate, topics, demo, reconcile, bench, chaos."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from cli import api_keys, webhooks
from settings import Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run one Faust worker with every agent")
    commands.add_parser("migrate", help="create or upgrade the PostgreSQL schema (safe to run twice)")
    commands.add_parser("topics", help="create every topic with its partition count")
    commands.add_parser("rebuild-read-models", help="recompute the daily balances from the postings")
    demo = commands.add_parser("demo", help="the main job on the embedded default")
    demo.add_argument("--payments", type=int, default=2000, help="how many payments to send")
    demo.add_argument("--accounts", type=int, default=40)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--serve", action="store_true",
                      help="afterwards, keep the worker (on PAYMENTS_WEB_PORT) and the embedded servers up")
    reconcile = commands.add_parser("reconcile", help="compare worker balances with the ledger")
    reconcile.add_argument("--json", action="store_true", help="print the report as JSON")
    reconcile.add_argument("--outbox-stuck-seconds", type=float, default=60.0)
    bench = commands.add_parser("bench", help="the service against the classic row-lock design")
    bench.add_argument("--payments", type=int, default=3000, help="payments per throughput run, per workload")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, for tests; not for figures")
    bench.add_argument("--workers", type=_counts, default=(1, 2),
                       help="worker counts to measure the service at, increasing (default 1,2)")
    bench.add_argument("--read-side-apart", action="store_true",
                       help="run the read side in a worker of its own (PAYMENTS_WORKER_ROLE=read-side) "
                            "beside payments-only workers; its CPU is counted apart")
    bench.add_argument("--output", type=Path, default=None,
                       help="JSON path (default: PAYMENTS_DATA_DIR/bench-results.json)")
    bench.add_argument("--history", type=_points, default=None, metavar="N,N,...",
                       help="instead: worker memory and restart time after N payments of history "
                            "(e.g. 10000,100000; add 1000000 for the long mode)")
    chaos = commands.add_parser("chaos", help="the fault campaign: scenarios x seeds, Jepsen-style counts")
    chaos.add_argument("--scenarios", default=None, help="comma-separated (default: all)")
    chaos.add_argument("--seeds", type=_positive, default=20, help="seeds per scenario")
    chaos.add_argument("--first-seed", type=int, default=1)
    chaos.add_argument("--payments", type=_positive, default=100, help="payments per scenario x seed")
    chaos.add_argument("--recovery-timeout", type=float, default=60.0,
                       help="seconds after the load and the last fault before an unanswered command is lost")
    chaos.add_argument("--json", type=Path, default=None, help="write every seed's counts to this file")
    chaos.add_argument("--regressions", type=Path, default=None,
                       help="regression seed file (default: tests/chaos_regressions.json)")
    chaos.add_argument("--replay", action="store_true", help="run the seeds in the regression file")
    chaos.add_argument("--no-record", action="store_true", help="do not add failing seeds to the file")
    api_keys.add_parser(commands)
    webhooks.add_parser(commands)
    for name, what in (("asyncapi", "docs/asyncapi.yaml (Kafka)"), ("openapi", "docs/openapi.json (HTTP)")):
        document = commands.add_parser(name, help=f"write {what} from the models")
        document.add_argument("--check", action="store_true", help="exit 1 when the document is out of date")
    args = parser.parse_args(argv)
    if args.command in ("asyncapi", "openapi"):
        return _document(args.command, check_only=args.check)
    try:
        settings = load_settings()
        return _run(args, settings)
    except SettingsError as error:
        print(f"payments {args.command}: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "worker":
        from cli.worker import run_worker

        return run_worker(settings)
    if args.command == "migrate":
        from ledger.migrate import migrate

        applied = asyncio.run(migrate(settings.require_database()))
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'schema is current'}")
        return 0
    if args.command == "rebuild-read-models":
        rows = asyncio.run(_rebuild_read_models(settings.require_database()))
        print(f"daily balances rebuilt from the ledger: {rows} rows")
        return 0
    if args.command == "topics":
        from infra.topics import ensure_topics, service_topics

        asyncio.run(ensure_topics(settings.require_broker(), service_topics(settings.partitions),
                                 settings.kafka_client_options()))
        print(f"topics ready with {settings.partitions} partitions")
        return 0
    if args.command == "demo":
        from cli.demo import run_demo

        return run_demo(settings, payments=args.payments, accounts=args.accounts, seed=args.seed,
                        serve=args.serve)
    if args.command == "reconcile":
        from cli.reconcile import run_reconcile

        return run_reconcile(settings, as_json=args.json, outbox_stuck_seconds=args.outbox_stuck_seconds)
    if args.command == "chaos":
        return _chaos(args, settings)
    if args.command == "api-keys":
        return api_keys.run(args, settings.require_database())
    if args.command == "webhooks":
        return webhooks.run(args, settings)
    if args.history:
        from bench.history import run_history

        output = args.output or settings.data_dir / "bench-history.json"
        output.write_text(json.dumps(run_history(settings, args.history), indent=2))
        print(f"figures written to {output}")
        return 0
    from bench.main import run_bench

    return run_bench(settings, payments=args.payments, quick=args.quick, output=args.output,
                     worker_counts=args.workers, read_side_apart=args.read_side_apart)


def _points(text: str) -> tuple[int, ...]:
    from bench.history import parse_points

    try:
        return parse_points(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _counts(text: str) -> tuple[int, ...]:
    from bench import check_worker_counts  # light: the workloads only

    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated worker counts, not {text!r}") from None
    try:
        check_worker_counts(counts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _chaos(args: argparse.Namespace, settings: Settings) -> int:
    from cli.chaos import REGRESSIONS_PATH, run_chaos
    from harness.campaign import Sizes

    regressions = None if args.no_record and not args.replay else (args.regressions or REGRESSIONS_PATH)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()] if args.scenarios else None
    sizes = Sizes(payments=args.payments, recovery_timeout_seconds=args.recovery_timeout)
    try:
        return run_chaos(settings, scenarios=scenarios, seeds=args.seeds, first_seed=args.first_seed,
                         sizes=sizes, json_path=args.json, regressions=regressions, replay=args.replay)
    except ValueError as error:
        print(f"payments chaos: {error}", file=sys.stderr)
        return 2


async def _rebuild_read_models(database_url: str) -> int:
    from ledger.store import LedgerStore

    store = await LedgerStore.connect(database_url)
    try:
        return await store.rebuild_daily_balances()
    finally:
        await store.close()


def _document(name: str, *, check_only: bool) -> int:
    """Needs no settings or broker: the document comes from the models alone."""
    if name == "asyncapi":
        from infra import asyncapi as document
    else:
        from api import openapi as document  # type: ignore[no-redef]

    if not check_only:
        document.write(document.DOCUMENT_PATH)
        print(f"wrote {document.DOCUMENT_PATH}")
        return 0
    found = document.check(document.DOCUMENT_PATH)
    for line in found:
        print(line)
    if found:
        print(f"the document is out of date: run `payments {name}`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
