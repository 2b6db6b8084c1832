"""C{salvusctl backup …} and C{salvusctl restore …}: argument parsing and the text an operator reads.

The transport is the caller's: C{call(method, *args)} performs one XML-RPC call (C{"backup.run"}
…) against the host's admin and returns its result.  Exit codes: 0 done, 1 the operation failed
(a failed run, a verify that found problems, a failed restore), 2 bad usage or a refused request.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["backupMain", "restoreMain", "formatSize"]

Call = Callable[..., Any]


def formatSize(n: Any) -> str:
    """Bytes for people: C{1.5 MiB}."""
    try:
        value = float(n)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _when(t: Any) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Usage(f"{self.prog}: {message}")


class _Usage(Exception):
    pass


def _backupParser() -> argparse.ArgumentParser:
    parser = _Parser(prog="salvusctl backup", description="Run, watch, list and verify backups.")
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="run a backup set now and wait for it")
    run.add_argument("name", nargs="?", default="")
    sub.add_parser("status", help="what is running, its progress, the last run, the next one")
    listing = sub.add_parser("list", help="recorded runs, oldest first")
    listing.add_argument("name", nargs="?", default="")
    log = sub.add_parser("log", help="one run's log")
    log.add_argument("run")
    verify = sub.add_parser("verify", help="restore RUN into scratch space and check it")
    verify.add_argument("run")
    return parser


def _fault(e: Exception, out: TextIO) -> int:
    message = getattr(e, "faultString", None) or str(e)
    out.write(f"error: {message}\n")
    return 2


def backupMain(argv: list[str], call: Call, out: TextIO | None = None) -> int:
    """C{salvusctl backup run|status|list|log|verify}; returns the exit code."""
    out = out or sys.stdout
    try:
        args = _backupParser().parse_args(argv)
    except _Usage as e:
        out.write(f"{e}\n")
        return 2
    try:
        if args.verb == "run":
            result = call("backup.run", args.name)
            out.write(_summary(result))
            return 0 if result.get("outcome") == "ok" else 1
        if args.verb == "status":
            for status in call("backup.status"):
                out.write(_status(status))
            return 0
        if args.verb == "list":
            rows = call("backup.list", args.name)
            out.write(f"{'RUN':34} {'OUTCOME':12} {'STARTED (UTC)':20} {'SNAPSHOT':>10} "
                      f"{'DUMPS':>10} {'COPIED':>10}  BASE\n")
            for r in rows:
                outcome = r.get("outcome", "") + (" (deleted)" if r.get("deleted_at") else "")
                out.write(f"{r['run_id']:34} {outcome:12} {_when(r.get('started')):20} "
                          f"{formatSize(r.get('snapshot_size')):>10} {formatSize(r.get('dump_size')):>10} "
                          f"{formatSize(r.get('bytes_transferred')):>10}  {r.get('base_run') or '-'}\n")
            return 0
        if args.verb == "log":
            out.write(call("backup.log", args.run).rstrip("\n") + "\n")
            return 0
        report = call("backup.verify", args.run)
        for line in report.get("checked", []):
            out.write(f"ok       {line}\n")
        for line in report.get("problems", []):
            out.write(f"PROBLEM  {line}\n")
        out.write(f"verify {report['run_id']}: {'OK' if report.get('ok') else 'FAILED'}\n")
        return 0 if report.get("ok") else 1
    except Exception as e:
        return _fault(e, out)


def restoreMain(argv: list[str], call: Call, out: TextIO | None = None) -> int:
    """C{salvusctl restore [RUN] [--dry-run] [--backup NAME]}; returns the exit code."""
    out = out or sys.stdout
    parser = _Parser(prog="salvusctl restore",
                     description="Stop the deploys, restore databases and files, start them again.")
    parser.add_argument("run", nargs="?", default="", help="run id (default: the newest good run)")
    parser.add_argument("--dry-run", action="store_true", help="list the steps, change nothing")
    parser.add_argument("--backup", default="", help="the backup set (when a host has several)")
    try:
        args = parser.parse_args(argv)
    except _Usage as e:
        out.write(f"{e}\n")
        return 2
    try:
        report = call("backup.restore", args.run, args.dry_run, args.backup)
    except Exception as e:
        return _fault(e, out)
    title = "would restore" if report.get("dry_run") else "restore"
    out.write(f"{title} {report['run_id']} ({report.get('backup', '')}):\n")
    for n, step in enumerate(report.get("steps", []), 1):
        extra = f"  [{step['error']}]" if step.get("error") else ""
        out.write(f"{n:3}. {step.get('outcome', ''):8} {step['step']}{extra}\n")
    if report.get("dry_run"):
        return 0
    out.write(f"restore {report['run_id']}: {report.get('outcome', '').upper()}\n")
    return 0 if report.get("outcome") == "ok" else 1


def _summary(result: dict[str, Any]) -> str:
    sizes = ", ".join(f"{label} {formatSize(result.get(key))}" for label, key in (
        ("snapshot", "snapshot_size"), ("dumps", "dump_size"), ("copied", "bytes_transferred")))
    return f"{result['run_id']}: {result['outcome']}; {sizes}, base {result.get('base_run') or '-'}\n"


def _status(status: dict[str, Any]) -> str:
    lines = [f"{status['backup']} -> {status.get('destination', '')} ({status.get('schedule', '')})"]
    if status.get("state") == "running":
        lines.append(f"  running {status['run_id']}: {status['phase']} {status.get('step', '')} "
                     f"{status['percent']}% ({formatSize(status.get('bytes'))})")
    else:
        lines.append("  idle")
    last = status.get("last")
    if last:
        lines.append(f"  last: {last['run_id']} {last['outcome']} at {_when(last.get('ended'))}")
    if status.get("next_due"):
        lines.append(f"  next: {_when(status['next_due'])}")
    return "\n".join(lines) + "\n"
