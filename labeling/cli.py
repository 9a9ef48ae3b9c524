"""``python -m labeling``: serve, stats, export, publish, suggest, users, autolabel, accuracy. A thin layer over the
library.

Bad input ends with one line on stderr naming the input and the problem, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedmtl.cliargs import OneLineParser
from labeling.attributes import load_attributes
from labeling.errors import LabelingError

if TYPE_CHECKING:
    from labeling.app import LabelingApp, Server

__all__ = ["main", "build_parser"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m labeling", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, images: bool = True) -> None:
        p.add_argument("--db", required=True, help="SQLite label database (created if missing)")
        if images:
            p.add_argument("--images", required=True, help="image folder or generation manifest.jsonl")
        p.add_argument("--attributes", metavar="TOML", help="attribute set (default: the five of the paper)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    serve = sub.add_parser("serve", help="run the labelling app in the browser")
    common(serve)
    serve.add_argument("--annotator", default="annotator", help="your name when not using --auth")
    serve.add_argument("--auth", metavar="USERS", help="users file (made by `users add`): login required")
    serve.add_argument("--ssl-certfile", metavar="PEM", help="TLS certificate: serve HTTPS (with --ssl-keyfile)")
    serve.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=7860)
    serve.add_argument("--no-suggestions", action="store_true", help="no pre-selected suggestions")

    stats = sub.add_parser("stats", help="label distribution, progress, agreement, conflicts")
    common(stats, images=False)
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")

    export = sub.add_parser("export", help="write a Hugging Face DatasetDict folder (train/test)")
    common(export)
    export.add_argument("--out", required=True, help="output folder (replaced atomically)")
    export.add_argument("--test-fraction", type=_fraction, default=0.2)
    export.add_argument("--seed", type=int, default=0, help="split seed")
    export.add_argument("--ties", choices=("drop", "review"), default="drop",
                        help="drop: tied attributes become -1; review: tied items are left out, listed in "
                             "OUT/review.jsonl")
    export.add_argument("--include-unlabelled", action="store_true", help="also export items with no labels")

    publish = sub.add_parser("publish", help="push an exported folder to the Hugging Face Hub")
    publish.add_argument("--dataset", required=True, help="folder written by `export`")
    publish.add_argument("--repo-id", required=True, help="e.g. user/synthetic-face-attributes")
    publish.add_argument("--private", action="store_true")

    suggest = sub.add_parser("suggest", help="precompute landmark (and deepface) suggestions into the database")
    common(suggest)

    users = sub.add_parser("users", help="manage the --auth users file (scrypt password hashes)")
    users_sub = users.add_subparsers(dest="action", required=True)
    for action, text in (("add", "add a user or change a password (asked for, never echoed)"),
                         ("remove", "remove a user"), ("list", "list the user names")):
        p = users_sub.add_parser(action, help=text)
        p.add_argument("--file", required=True, help="users file (created by `add` if missing)")
        if action != "list":
            p.add_argument("name", help="annotator name")
    _add_provenance_commands(sub, common, export)
    return parser


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _add_provenance_commands(sub, common, export: argparse.ArgumentParser) -> None:
    """Machine labels and their measurement: autolabel, accuracy, and the export options that use them."""
    export.add_argument("--min-confidence", type=_confidence, default=0.0,
                        help="use a model's label (where no person labelled) only at this confidence or above")
    export.add_argument("--accuracy", metavar="JSON", help="accuracy report (from `accuracy --out`) for the card")
    autolabel = sub.add_parser("autolabel", help="machine labels for every image (resumable; offline once cached)")
    common(autolabel)
    accuracy = sub.add_parser("accuracy", help="each model source against people's labels, per attribute")
    common(accuracy, images=False)
    accuracy.add_argument("--split", choices=("tune", "report", "all"), default="report",
                          help="faces to measure on (report: the half never used for tuning)")
    accuracy.add_argument("--split-file", metavar="JSONL",
                          help="rows with sample_id and split (tune/report) that override the hash rule")
    accuracy.add_argument("--out", metavar="JSON", help="also write the report as JSON (for `export --accuracy`)")


def _check_tls(args: argparse.Namespace) -> None:
    """Both TLS files or neither, and a certificate that loads with its key (one line otherwise)."""
    import ssl

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise LabelingError("--ssl-certfile and --ssl-keyfile go together")
    if not args.ssl_certfile:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    except FileNotFoundError as exc:
        raise LabelingError(f"--ssl-certfile/--ssl-keyfile: no such file {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise LabelingError(f"--ssl-certfile {args.ssl_certfile} / --ssl-keyfile {args.ssl_keyfile}: not a "
                            f"certificate and its private key in PEM ({exc})") from None


def _start_serving(args: argparse.Namespace) -> tuple[Server, LabelingApp]:
    """The app and its running server (the stop signals are already blocked)."""
    from labeling.app import LabelingApp, start_server
    from labeling.images import load_catalog
    from labeling.security import is_loopback
    from labeling.store import LabelStore
    from labeling.users import load_users

    if not is_loopback(args.host) and not args.auth:
        raise LabelingError(f"--host {args.host}: binding to a non-loopback address requires --auth USERS "
                            "(made by `python -m labeling users add --file USERS NAME`)")
    users = load_users(args.auth) if args.auth else None
    _check_tls(args)
    if not is_loopback(args.host) and not args.ssl_certfile:
        print(f"warning: --host {args.host} without --ssl-certfile: passwords and labels cross the network "
              "unencrypted (see README, 'TLS for a lab')", file=sys.stderr)
    catalog = load_catalog(args.images, progress=not args.no_progress)
    for name, reason in catalog.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    store = LabelStore(args.db, load_attributes(args.attributes))
    app = LabelingApp(store, catalog, annotator=args.annotator, users=users,
                      suggestions=not args.no_suggestions, progress=not args.no_progress)
    for notice in app.notices:
        print(notice, file=sys.stderr)
    try:
        server = start_server(app, args.host, args.port, ssl_certfile=args.ssl_certfile,
                              ssl_keyfile=args.ssl_keyfile)
    except BaseException:
        app.close()
        raise
    return server, app


def _serve(args: argparse.Namespace) -> int:
    from labeling.stopping import block_stop_signals, note_stop_signals, pending_stop_signal, unblock_stop_signals

    # First, before anything below can start a thread (imports, the app's workers, the server): every thread
    # inherits the blocked mask, so a stop signal always waits for the main thread, which learns its sender.
    note_stop_signals()
    block_stop_signals()
    try:
        server, app = _start_serving(args)
    except BaseException:  # a bad input or a taken port: whoever called main() gets its signals back
        unblock_stop_signals()
        raise
    if (early := pending_stop_signal()) is not None:  # Ctrl-C during start-up: it waited until now
        print(f"labeling: stopping on {early.describe()} during start-up", file=sys.stderr, flush=True)
        server.stop()
        app.close()
        unblock_stop_signals()
        return 130
    from labeling.app import serve_forever

    print(f"labeling {len(app.ids)} images at {server.url} (Ctrl-C to stop)", flush=True)
    serve_forever(server, app)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from labeling.stats import compute_stats, format_stats

    store = _existing_store(args)
    stats = compute_stats(store)
    print(json.dumps(stats.as_dict(), indent=2) if args.json else format_stats(stats, store))
    return 0


def _existing_store(args: argparse.Namespace):
    from pathlib import Path

    from labeling.store import LabelStore

    if not Path(args.db).is_file():
        raise LabelingError(f"--db {args.db}: no such database")
    return LabelStore(args.db, load_attributes(args.attributes))


def _export(args: argparse.Namespace) -> int:
    from labeling.export import export_dataset
    from labeling.images import load_catalog

    store = _existing_store(args)
    catalog = load_catalog(args.images, progress=not args.no_progress)
    accuracy = None
    if args.accuracy:
        from labeling.accuracy import load_accuracy

        accuracy = load_accuracy(args.accuracy)
    result = export_dataset(store, catalog, args.out, test_fraction=args.test_fraction, seed=args.seed,
                            ties=args.ties, include_unlabelled=args.include_unlabelled,
                            progress=not args.no_progress, min_confidence=args.min_confidence,
                            accuracy=accuracy)
    for name, reason in catalog.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if result.missing_images:
        print(f"left out {len(result.missing_images)} labelled item(s) with no readable image: "
              + ", ".join(result.missing_images[:10]), file=sys.stderr)
    print(f"wrote {result.out}: " + ", ".join(f"{k}={v}" for k, v in result.splits.items())
          + f" (ties: {result.ties}, held for review: {result.review})")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from labeling.export import publish

    print(f"published {publish(args.dataset, args.repo_id, private=args.private)}")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from labeling.app import LabelingApp
    from labeling.images import load_catalog

    catalog = load_catalog(args.images, progress=not args.no_progress)
    from labeling.store import LabelStore

    app = LabelingApp(LabelStore(args.db, load_attributes(args.attributes)), catalog,
                      progress=not args.no_progress)
    for notice in app.notices:
        print(notice, file=sys.stderr)
    for item in tqdm(app.ids, desc="suggestions", unit="img", disable=args.no_progress):
        app.suggestions(item)
    print(f"suggestions for {len(app.ids)} images in {args.db}")
    return 0


def _users(args: argparse.Namespace) -> int:
    import getpass

    from labeling.users import add_user, list_users, remove_user

    if args.action == "list":
        print("\n".join(list_users(args.file)))
    elif args.action == "remove":
        remove_user(args.file, args.name)
        print(f"removed {args.name} from {args.file}")
    else:
        from labeling.store import validate_annotator

        validate_annotator(args.name)
        password = getpass.getpass(f"password for {args.name}: ")
        if not password:
            raise LabelingError("empty password")
        if getpass.getpass("again: ") != password:
            raise LabelingError("the two passwords differ")
        new = add_user(args.file, args.name, password)
        print(f"{'added' if new else 'changed the password of'} {args.name} in {args.file}")
    return 0


def _autolabel(args: argparse.Namespace) -> int:
    from labeling.autolabel import autolabel
    from labeling.store import LabelStore

    store = LabelStore(args.db, load_attributes(args.attributes))
    written = autolabel(args.images, store, progress=not args.no_progress)
    print(f"wrote {written} machine label(s) to {args.db}")
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    from fedmtl.files import atomic_write
    from labeling.accuracy import accuracy_report, format_accuracy, read_splits

    splits = read_splits(args.split_file) if args.split_file else None
    report = accuracy_report(_existing_store(args), args.split, splits=splits)
    if args.out:
        atomic_write(args.out, (json.dumps(report.as_dict(), indent=2) + "\n").encode())
    print(format_accuracy(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"serve": _serve, "stats": _stats, "export": _export, "publish": _publish, "suggest": _suggest,
                "users": _users, "autolabel": _autolabel, "accuracy": _accuracy}
    try:
        return handlers[args.command](args)
    except LabelingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
