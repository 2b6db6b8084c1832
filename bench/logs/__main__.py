"""Logs: Salvus's supervisor + admin against supervisord 4.3, same programs, same files, one run.

    python bench/logs [--json PATH] [--size-mib N]
    python bench/logs --quick     # seconds: an 8 MiB log, small floods (CI checks it runs)

1. tail of a large log (1 GiB by default): a quiet program whose stdout log is that file (the
   same file for both).  Median and p99 of C{tailProcessStdoutLog(name, 0, 1600)} and
   C{readProcessStdoutLog(name, -1600, 0)} over XML-RPC on one connection, the wall time of
   C{supervisorctl tail}, and the server's RSS afterwards.  C{getState} is timed too: the cost
   of a call that reads nothing, so what a tail adds to it shows.
2. log throughput: a program writes 200,000 lines of 100 bytes and exits; the supervisor's CPU
   seconds (utime + stime from /proc) from its start until every line is in the log file give
   lines per CPU-second.
3. RSS under long lines: 4 instances each write 1,500 lines of 60 KiB (about 350 MiB in all) and
   stay up; the server's RSS once every line is in the files.
3b. floods shaped like logs (FLOOD_KINDS in workloads.py): lines of 100 bytes without a level word,
   with one in every line, with one in 30% of them; lines of 24 bytes and of 4 KiB (30%).  The
   "_classified" rows run Salvus's program with log_level=info: the lines' levels decide what
   its log file keeps.  Both supervisors interleaved over
   --rounds rounds, their order alternating; the median CPU microseconds a line.
4. followers: 20 connections to /logtail (what `supervisorctl tail -f` opens) follow a program
   printing 100 lines a second; the p99 of getState calls without and with them.
5. balancer beside followers (Salvus only; nginx and wrk): one twistd host with a balancer in
   front of nginx, the admin and that program; the balancer's p99 (wrk, 20 connections, 1 KiB)
   and getState's p99 without and with the 20 followers, in the one reactor they share.

supervisord comes from the test extras (beside this Python).  Ratios are Salvus over supervisord:
below 1 is better for times, CPU and RSS; above 1 is better for lines per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bench.logs.workloads import BALANCER, FLOOD_KINDS, FOLLOWERS, PARTS, balancerFigures, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--size-mib", type=int, default=1024, help="the large log's size")
    parser.add_argument("--flood-lines", type=int, default=200_000, help="lines of the flood")
    parser.add_argument("--only", help="comma-separated subset of tail,followers,flood,long,balancer")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the floods part")
    parser.add_argument("--floods-lines", type=int, default=200_000, help="lines of each log-shaped flood")
    parser.add_argument("--quick", action="store_true", help="an 8 MiB log, small floods (no figures judged)")
    args = parser.parse_args()
    size = (8 if args.quick else args.size_mib) << 20
    calls = 5 if args.quick else 100
    nflood = 5000 if args.quick else args.flood_lines
    nlong, wlong, linesLong = 4, 60 * 1024, (20 if args.quick else 1500)
    parts = tuple(args.only.split(",")) if args.only else PARTS + (BALANCER,)
    figures = {"salvus": {}, "supervisord": {}}
    if set(parts) - {BALANCER}:
        figures = run(parts=tuple(p for p in parts if p != BALANCER), size=size, calls=calls,
                      quick=args.quick, nflood=nflood, nlong=nlong, wlong=wlong, linesLong=linesLong,
                      nfloods=5000 if args.quick else args.floods_lines,
                      rounds=1 if args.quick else args.rounds)
    balancer = {}
    if BALANCER in parts:
        balancer = balancerFigures(seconds=1 if args.quick else 5, rounds=1 if args.quick else 3,
                                   quick=args.quick)

    s, d = figures["salvus"], figures["supervisord"]
    rows = [
        ("getState (the XML-RPC floor), median ms", "getstate_median_ms", "%.3f"),
        (f"tail 1600 B of {size >> 20} MiB, median ms", "tail_median_ms", "%.3f"),
        (f"tail 1600 B of {size >> 20} MiB, p99 ms", "tail_p99_ms", "%.3f"),
        (f"read -1600 of {size >> 20} MiB, median ms", "read_median_ms", "%.3f"),
        ("supervisorctl tail, s", "supervisorctl_tail_s", "%.3f"),
        ("RSS after the tails, MB", "rss_after_tails_mb", "%.1f"),
        ("getState p99, no follower, ms", "getstate_p99_alone_ms", "%.3f"),
        (f"getState p99, {FOLLOWERS} tail -f followers, ms", "getstate_p99_followers_ms", "%.3f"),
        ("  what the followers received, KiB", "followers_got_kb", "%.0f"),
        (f"flood {nflood} lines: CPU s", "flood_cpu_s", "%.2f"),
        ("lines per CPU-second", "lines_per_cpu_s", "%.0f"),
        ("lines per second (wall)", "lines_per_s_wall", "%.0f"),
        (f"RSS, {nlong} x {linesLong} lines of 60 KiB, MB", "rss_long_lines_mb", "%.1f"),
        ("  growth while they wrote, MB", "rss_long_lines_growth_mb", "%.1f"),
    ] + [(f"flood {kind} ({FLOOD_KINDS[kind][0]} B): CPU us a line", f"flood_{kind}_us_per_line", "%.3f")
         for kind in FLOOD_KINDS]
    if s:
        print(f"| {'metric':<44} | {'Salvus':>10} | {'supervisord':>11} | {'Salvus/supervisord':>18} |")
        print(f"| {'-' * 44} | {'-' * 10} | {'-' * 11} | {'-' * 18} |")
    for label, key, fmt in rows:
        if key not in s:
            continue
        ratio = s[key] / d[key] if d[key] else float("nan")
        print(f"| {label:<44} | {fmt % s[key]:>10} | {fmt % d[key]:>11} | {ratio:>18.3f} |")
    if balancer:
        print()
        print(f"One twistd host: balancer (nginx behind it, wrk -c20), admin, a program printing 100 "
              f"lines/s; medians of {1 if args.quick else 3} rounds")
        print(f"| {'metric':<44} | {'0 followers':>11} | {f'{FOLLOWERS} followers':>12} | {'ratio':>6} |")
        print(f"| {'-' * 44} | {'-' * 11} | {'-' * 12} | {'-' * 6} |")
        for label, key in (("balancer p99 (wrk), ms", "balancer_p99"),
                           ("getState p99, ms", "host_getstate_p99")):
            a, f = balancer[key + "_alone_ms"], balancer[key + "_followers_ms"]
            print(f"| {label:<44} | {a:>11.3f} | {f:>12.3f} | {f / a if a else float('nan'):>6.2f} |")
        a, f = balancer["host_cpu_pct_alone"], balancer["host_cpu_pct_followers"]
        ratio = f / a if a else float("nan")
        print(f"| {'host CPU with no request, %':<44} | {a:>11.2f} | {f:>12.2f} | {ratio:>6.2f} |")
        print(f"  what the followers received: {balancer['host_followers_got_kb']:.0f} KiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(figures, balancer=balancer), f, indent=2)


if __name__ == "__main__":
    main()
