"""Blocking psutil reads: one call samples every instance's process tree and the host.

This module does no Twisted work: the monitor service runs L{Sampler.sample} on its own one-thread
pool so the reactor never waits for C{/proc}.  psutil computes cpu % from the difference between two
calls on the same C{Process} object, so the sampler keeps those objects between ticks (keyed by pid
and start time, so a recycled pid is never mistaken for the old process).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psutil

__all__ = ["Sampler", "directorySize", "PROCESS_FIELDS"]

PROCESS_FIELDS = (
    "pid",
    "ppid",
    "name",
    "cpu_percent",
    "mem_percent",
    "cputime",
    "walltime",
    "vms",
    "rss",
    "threads",
    "fds",
    "status",
)

# Mount types that describe no real storage: skipped in the per-mount disk usage.
_PSEUDO_FS = frozenset(
    {"proc", "sysfs", "devpts", "tmpfs", "devtmpfs", "cgroup", "cgroup2", "mqueue", "securityfs",
     "debugfs", "tracefs", "pstore", "bpf", "autofs", "hugetlbfs", "fusectl", "configfs", "nsfs",
     "squashfs", "ramfs", "binfmt_misc", "rpc_pipefs", "overlay"}
)


def directorySize(path: str, limit: int = 200_000) -> int | None:
    """Bytes used by the files under C{path} (like C{du -s --apparent-size}); None if missing.

    Stops counting after C{limit} entries so that a runaway directory cannot stall the sampler
    thread; the result is then a lower bound.
    """
    if not os.path.isdir(path):
        return None
    total = 0
    seen = 0
    stack = [path]
    while stack and seen < limit:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


class Sampler:
    """Samples process trees and the host; keeps psutil state between calls.

    @param mounts: sample the usage of every real mount (not proc, tmpfs, overlay …) too.
    @param clock: wall-clock seconds, only to turn psutil's process start times (wall-clock
        epochs) into run times; sample timestamps come from the caller's clock.
    """

    def __init__(self, mounts: bool = True, clock=time.time):
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self._mounts = mounts
        self._clock = clock
        self._mountList: list[Any] | None = None
        self._mountListAge = 0

    # -- processes -------------------------------------------------------------------------------

    def _process(self, proc: psutil.Process) -> tuple[tuple[int, float], psutil.Process]:
        key = (proc.pid, proc.create_time())
        cached = self._procs.get(key)
        if cached is None:
            cached = self._procs[key] = proc
            # The first cpu_percent call of a Process only primes it.
            cached.cpu_percent(None)
        return key, cached

    def _one(self, proc: psutil.Process, now: float) -> dict[str, Any]:
        with proc.oneshot():
            times = proc.cpu_times()
            mem = proc.memory_info()
            try:
                fds = proc.num_fds()
            except (psutil.AccessDenied, AttributeError):
                fds = None
            created = proc.create_time()
            return {
                "pid": proc.pid,
                "ppid": proc.ppid(),
                "name": proc.name(),
                "cpu_percent": proc.cpu_percent(None),
                "mem_percent": proc.memory_percent(),
                "cputime": times.user + times.system,
                "walltime": max(0.0, self._clock() - created),
                "vms": mem.vms,
                "rss": mem.rss,
                "threads": proc.num_threads(),
                "fds": fds,
                "status": proc.status(),
            }

    def sampleTree(self, pid: int, now: float, seen: set | None = None) -> dict[str, Any] | None:
        """One instance: the process C{pid} and all its descendants, summed and per process.

        Returns None when the root process is gone.
        """
        try:
            root = psutil.Process(pid)
            key, root = self._process(root)
            children = root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ProcessLookupError):
            return None
        processes = []
        for i, candidate in enumerate([root, *children]):
            try:
                if i == 0:
                    proc = root
                else:
                    key, proc = self._process(candidate)
                processes.append(self._one(proc, now))
                if seen is not None:
                    seen.add(key)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                if i == 0:
                    return None
                continue
        head = processes[0]
        fds = [p["fds"] for p in processes]
        return {
            "pid": pid,
            "timestamp": now,
            "cpu_percent": sum(p["cpu_percent"] for p in processes),
            "mem_percent": sum(p["mem_percent"] for p in processes),
            "rss": sum(p["rss"] for p in processes),
            "vms": sum(p["vms"] for p in processes),
            "cputime": sum(p["cputime"] for p in processes),
            "walltime": head["walltime"],
            "threads": sum(p["threads"] for p in processes),
            "fds": None if None in fds else sum(fds),
            "status": head["status"],
            "nprocs": len(processes),
            "processes": processes,
        }

    # -- host ------------------------------------------------------------------------------------

    def sampleHost(self, now: float, deployDirs: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Load, cpu, memory and swap of the host; mount usage; sizes of deploy directories.

        @param deployDirs: {deploy: directory} to size now (the service asks for this on a slower
            interval than the process samples: walking a tree costs more than reading C{/proc}).
        """
        load1, load5, load15 = os.getloadavg()
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        cpu = psutil.cpu_percent(None)
        host: dict[str, Any] = {
            "timestamp": now,
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "cpu_percent": cpu,
            "cpu_count": psutil.cpu_count() or 1,
            "mem_total": vm.total,
            "mem_free": vm.free,
            "mem_available": vm.available,
            "swap_total": swap.total,
            "swap_used": swap.used,
            "mounts": self._sampleMounts() if self._mounts else [],
            "deploys": [],
        }
        for deploy, directory in sorted((deployDirs or {}).items()):
            host["deploys"].append(
                {"deploy": deploy, "path": directory, "bytes": directorySize(directory)}
            )
        return host

    def _sampleMounts(self) -> list[dict[str, Any]]:
        # The mount table rarely changes: reread it every 60 samples.
        if self._mountList is None or self._mountListAge >= 60:
            self._mountList = [
                p for p in psutil.disk_partitions(all=False) if p.fstype not in _PSEUDO_FS
            ]
            self._mountListAge = 0
        self._mountListAge += 1
        out = []
        seen_devices = set()
        for part in self._mountList:
            if part.device in seen_devices:
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
            seen_devices.add(part.device)
            out.append(
                {
                    "mountpoint": part.mountpoint,
                    "device": part.device,
                    "fstype": part.fstype,
                    "total": usage.total,
                    "used": usage.used,
                    "free": usage.free,
                    "percent": usage.percent,
                }
            )
        return out

    # -- one tick --------------------------------------------------------------------------------

    def sample(
        self,
        targets: Iterable[tuple[str, int]],
        now: float,
        deployDirs: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Sample every C{(name, pid)} target and the host: what one monitor tick needs.

        Forgets the psutil state of processes not seen in this tick.
        """
        seen: set = set()
        instances = {}
        for name, pid in targets:
            instances[name] = self.sampleTree(pid, now, seen)
        for key in list(self._procs):
            if key not in seen:
                del self._procs[key]
        return {"instances": instances, "host": self.sampleHost(now, deployDirs)}
