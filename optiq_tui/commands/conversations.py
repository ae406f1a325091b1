"""`optiq-chat conversations`: list, show, export or delete saved chats."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

HELP = "list, show, export (Markdown) or delete saved conversations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=["list", "show", "export", "rm"])
    parser.add_argument("id", nargs="?", help="conversation id (from `list`)")
    parser.add_argument("-o", "--output", help="export: write the Markdown here (default: print it)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.progress import OptiqError

    store = ConversationStore()
    try:
        if args.action == "list":
            items = store.list()
            if args.json:
                print(json.dumps([asdict(c) for c in items], indent=2))
            elif not items:
                print("no saved conversations", file=sys.stderr)
            for c in items if not args.json else ():
                print(f"{c.id}  {c.updated[:16].replace('T', ' ')}  {c.n_messages:>3} msgs  {c.model}  {c.title}")
            return 0
        if not args.id:
            print(f"error: `conversations {args.action}` needs a conversation id", file=sys.stderr)
            return 2
        if args.action == "show":
            conv = store.load(args.id)
            print(json.dumps(asdict(conv), indent=2) if args.json else store.to_markdown(args.id))
        elif args.action == "export":
            if args.output:
                print(store.export_markdown(args.id, args.output))
            else:
                print(store.to_markdown(args.id))
        elif args.action == "rm":
            store.delete(args.id)
            print(f"deleted {args.id}", file=sys.stderr)
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
