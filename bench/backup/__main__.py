"""Backup runs against the anchors: plain rsync for a full copy, rsnapshot-style
C{rsync --link-dest} for an incremental one.

    python bench/backup [--files 2000] [--size 16384] [--changed 0.01] [--json PATH]

Ours does more per run (manifest, per-file sha256 list, store record, retention), so the ratios
say what that costs; bytes copied and disk used by the incremental snapshot should equal the
anchor's.  Compare within one run, on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from salvusctl.backup.declare import Backup  # noqa: E402
from salvusctl.backup.job import BackupJob  # noqa: E402
from salvusctl.backup.records import BACKUP_MIGRATIONS, Records  # noqa: E402
from salvusctl.store.sqlite import SQLiteStore  # noqa: E402


def makeTree(root: str, files: int, size: int, rng: random.Random) -> list[str]:
    paths = []
    for i in range(files):
        path = os.path.join(root, f"d{i % 50:02d}", f"f{i:05d}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
        paths.append(path)
    return paths


def du(*paths: str) -> int:
    """Disk bytes used by the trees together (hard links counted once)."""
    out = subprocess.run(["du", "-scb", *paths], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def bench(reactor, args) -> dict:
    rng = random.Random(7)
    work = tempfile.mkdtemp(prefix="salvus-bench-backup-")
    src = os.path.join(work, "src")
    paths = makeTree(src, args.files, args.size, rng)
    store = SQLiteStore(reactor, os.path.join(work, "store.db"))
    store.addMigrations("backup", BACKUP_MIGRATIONS)
    await store.start()
    reps = args.repeat
    full_anchor, full_ours, inc_anchor, inc_ours, jobs, fulls, incs = [], [], [], [], [], [], []
    # Alternate anchor and ours so the page cache and the machine's other load hit both alike.
    for rep in range(reps):
        anchor = os.path.join(work, f"anchor{rep}")
        os.makedirs(anchor)
        full_anchor.append(timed(["rsync", "-a", src + "/", os.path.join(anchor, "1") + "/"]))
        decl = Backup(f"bench{rep}", os.path.join(work, f"ours{rep}"), paths={"src": src})
        decl.validate(None)
        job = BackupJob(reactor, decl, Records(store), "bench", os.path.join(work, "var"))
        jobs.append(job)
        t0 = reactor.seconds()
        fulls.append(await job.run())
        full_ours.append(reactor.seconds() - t0)
    changed = rng.sample(paths, max(1, int(len(paths) * args.changed)))
    for path in changed:
        with open(path, "wb") as f:
            f.write(rng.randbytes(args.size))
    while int(reactor.seconds()) == int(fulls[-1]["started"]):  # run ids carry the second
        await _sleep(reactor, 0.1)
    for rep in range(reps):
        anchor = os.path.join(work, f"anchor{rep}")
        inc_anchor.append(timed(["rsync", "-a", f"--link-dest={os.path.join(anchor, '1')}", src + "/",
                                 os.path.join(anchor, "2") + "/"]))
        t0 = reactor.seconds()
        incs.append(await jobs[rep].run())
        inc_ours.append(reactor.seconds() - t0)
    await store.close()
    assert all(r["outcome"] == "ok" for r in fulls + incs), [r["log"] for r in fulls + incs]
    full, inc = fulls[0], incs[0]
    ours1 = os.path.join(work, "ours0", full["run_id"])
    ours2 = os.path.join(work, "ours0", inc["run_id"])
    anchor = os.path.join(work, "anchor0")
    anchor_added = du(os.path.join(anchor, "1"), os.path.join(anchor, "2")) - du(os.path.join(anchor, "1"))
    ours_added = du(ours1, ours2) - du(ours1)
    subprocess.run(["rm", "-rf", work], check=True)
    t_full_anchor, t_full_ours = statistics.median(full_anchor), statistics.median(full_ours)
    t_inc_anchor, t_inc_ours = statistics.median(inc_anchor), statistics.median(inc_ours)
    return {
        "files": args.files,
        "file_size": args.size,
        "changed_files": len(changed),
        "repeat": reps,
        "full_seconds": {"rsync": round(t_full_anchor, 3), "salvus": round(t_full_ours, 3),
                         "ratio": round(t_full_ours / t_full_anchor, 2)},
        "incremental_seconds": {"rsync_link_dest": round(t_inc_anchor, 3), "salvus": round(t_inc_ours, 3),
                                "ratio": round(t_inc_ours / t_inc_anchor, 2)},
        "incremental_bytes_transferred": inc["bytes_transferred"],
        "incremental_disk_added": {"rsync_link_dest": anchor_added, "salvus": ours_added},
        "snapshot_size": inc["snapshot_size"],
    }


def _sleep(reactor, seconds):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="seconds, not minutes: 50 files, one run (CI checks it runs; no figures judged)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.repeat = min(args.files, 50), 1

    async def run(reactor):
        result = await bench(reactor, args)
        print(f"{args.files} files x {args.size} B, {result['changed_files']} changed; "
              f"medians of {args.repeat}")
        print(f"{'':28}{'anchor':>10}{'salvus':>10}{'ratio':>8}")
        for key, anchor in (("full_seconds", "rsync"), ("incremental_seconds", "rsync_link_dest")):
            row = result[key]
            print(f"{key:28}{row[anchor]:>10.3f}{row['salvus']:>10.3f}{row['ratio']:>8.2f}")
        disk = result["incremental_disk_added"]
        print(f"{'incremental disk added (B)':28}{disk['rsync_link_dest']:>10}{disk['salvus']:>10}")
        print(f"incremental bytes transferred: {result['incremental_bytes_transferred']}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
