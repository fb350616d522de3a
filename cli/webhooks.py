"""`payments webhooks add|list|remove|enable|deliveries|redeliver`: the notify step's endpoints.

`add` prints `<endpoint id> <secret>` as its last line: the secret (whsec_...) is shown
only then; receivers check the signature with it (Standard Webhooks).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime

from settings import Settings


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("webhooks", help="register webhook endpoints; see and redeliver deliveries")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register an endpoint; prints '<endpoint id> <secret>' last")
    add.add_argument("--url", required=True)
    add.add_argument("--event", action="append", default=[], metavar="TYPE", help="repeatable; default: all")
    add.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="repeatable: only events whose debtor, creditor or account is one of them",
    )
    actions.add_parser("list", help="the endpoints (never their secrets)")
    remove = actions.add_parser("remove", help="stop sending to an endpoint")
    remove.add_argument("endpoint_id")
    enable = actions.add_parser("enable", help="turn back on an endpoint disabled for failing")
    enable.add_argument("endpoint_id")
    deliveries = actions.add_parser("deliveries", help="the latest deliveries, each with its attempts")
    deliveries.add_argument("--failed", action="store_true", help="only those whose schedule is spent")
    deliveries.add_argument("--endpoint", default=None, metavar="ID")
    deliveries.add_argument("--limit", type=int, default=50)
    redeliver = actions.add_parser("redeliver", help="send again, with the same webhook-id")
    which = redeliver.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", default=None)
    which.add_argument(
        "--since",
        type=_moment,
        default=None,
        metavar="RFC3339",
        help="every delivery of the events that occurred since then",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.notify import EndpointRefused

    try:
        return asyncio.run(_run(args, settings))
    except EndpointRefused as error:
        print(f"payments webhooks {args.action}: {error}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.notify import register
    from ledger.migrate import migrate
    from ledger.store import LedgerStore

    database_url = settings.require_database()
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, max_size=1)
    try:
        if args.action == "add":
            endpoint, secret = await register(
                store, args.url, args.event, args.account, settings.webhook_allow_private, created_by=None
            )
            print(f"url: {endpoint.url}")
            print(f"events: {', '.join(sorted(endpoint.event_types or ())) or 'all'}")
            print(f"accounts: {', '.join(sorted(endpoint.accounts or ())) or 'all'}")
            print("the secret is shown only now; receivers verify the signature with it:")
            print(f"{endpoint.endpoint_id} {secret}")
            return 0
        if args.action == "list":
            for row in await store.webhook_endpoints():
                state = (
                    f"disabled {row.disabled_at.isoformat()}: {row.disabled_reason}"
                    if row.disabled_at
                    else "live"
                )
                print(
                    f"{row.endpoint_id}\t{row.url}\t{','.join(row.event_types or ()) or 'all events'}\t"
                    f"{','.join(row.accounts or ()) or 'all accounts'}\t{state}"
                )
            return 0
        if args.action in ("remove", "enable"):
            change = (
                store.remove_webhook_endpoint if args.action == "remove" else store.enable_webhook_endpoint
            )
            if await change(args.endpoint_id):
                print(f"{'removed' if args.action == 'remove' else 'enabled'} {args.endpoint_id}")
                return 0
            print(f"payments webhooks {args.action}: no endpoint {args.endpoint_id!r}", file=sys.stderr)
            return 1
        if args.action == "deliveries":
            for delivery in await store.webhook_deliveries(
                endpoint_id=args.endpoint, failed_only=args.failed, limit=args.limit
            ):
                print(
                    f"{delivery.delivery_id}\t{delivery.endpoint_id}\t{delivery.event_type}\t{delivery.event_id}\t"
                    f"{delivery.status}\tattempts={delivery.attempts}\t{delivery.last_error or ''}"
                )
                for attempt in delivery.log:
                    print(
                        f"\t{attempt.attempted_at.isoformat()}\tstatus={attempt.status_code}\t"
                        f"{attempt.latency_seconds * 1000:.0f} ms\t{attempt.error or 'ok'}"
                    )
            return 0
        count = await store.redeliver_webhooks(event_id=args.event_id, since=args.since)
        print(f"{count} deliveries set to be sent again")
        return 0 if count else 1
    finally:
        await store.close()


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone offset")
    return value
