"""`payments api-keys create|list|revoke`: the operator's keys for the HTTP API.

A key is printed once, as the last line of `create`, and never again: only its digest is
stored. A revocation reaches every worker within the gate's refresh (api/gate.py).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

from ledger.api_keys import NameTaken
from ledger.migrate import migrate
from ledger.store import LedgerStore
from models.api_keys import NAME_PATTERN, check_scopes, mint


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("api-keys", help="make, list and revoke API keys for the HTTP API")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once, as the last line")
    create.add_argument("--name", required=True, help="unique, never reused; shown in the audit log")
    create.add_argument(
        "--scope", action="append", default=[], metavar="S", help="repeatable; default: every scope"
    )
    create.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="repeatable: the key acts for and reads about these accounts only",
    )
    create.add_argument("--all-accounts", action="store_true", help="the key is not limited to accounts")
    actions.add_parser("list", help="every key: name, scopes, accounts, when made and revoked")
    revoke = actions.add_parser("revoke", help="revoke a key (every worker refuses it within 5 s)")
    revoke.add_argument("name")


def run(args: argparse.Namespace, database_url: str) -> int:
    try:
        return asyncio.run(_run(args, database_url))
    except (ValueError, NameTaken) as error:
        print(f"payments api-keys {args.action}: {error}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, database_url: str) -> int:
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, max_size=1)
    try:
        if args.action == "create":
            return await _create(store, args)
        if args.action == "list":
            for row in await store.list_api_keys():
                accounts = "all accounts" if row.accounts is None else ",".join(row.accounts)
                state = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "live"
                print(
                    f"{row.name}\tpk_{row.key_id}\t{','.join(row.scopes)}\t{accounts}\t"
                    f"created {row.created_at.isoformat()}\t{state}"
                )
            return 0
        if await store.revoke_api_key(args.name):
            print(f"revoked {args.name}")
            return 0
        print(f"payments api-keys revoke: no live key named {args.name!r}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _create(store: LedgerStore, args: argparse.Namespace) -> int:
    if not re.match(NAME_PATTERN, args.name):
        raise ValueError(f"--name {args.name!r} must be 1-64 characters of [A-Za-z0-9._:@-]")
    if args.account and args.all_accounts:
        raise ValueError("--account and --all-accounts exclude each other")
    scopes = check_scopes(args.scope)
    accounts = frozenset(args.account) if args.account else None
    key, text = mint(args.name, scopes, accounts)
    await store.create_api_key(key)
    print(f"name: {key.name}")
    print(f"scopes: {', '.join(sorted(scopes))}")
    print(f"accounts: {'all' if accounts is None else ', '.join(sorted(accounts))}")
    print("the key is shown only now; keep it secret:")
    print(text)
    return 0
