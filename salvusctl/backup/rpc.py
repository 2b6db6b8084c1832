"""The backup verbs over XML-RPC: mount with C{root.putSubHandler("backup", BackupXMLRPC(service))}.

Methods: C{backup.run([NAME])}, C{backup.status()}, C{backup.list([NAME])}, C{backup.log(RUN)},
C{backup.verify(RUN)}, C{backup.restore([RUN], [DRY_RUN], [NAME])}.  Results are plain structs;
C{None} becomes C{""} and integers beyond XML-RPC's 32 bits become doubles, so any XML-RPC client
reads them.  Errors are faults with stable codes (L{FAULTS}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.web import xmlrpc

from salvusctl.backup.job import AlreadyRunning
from salvusctl.backup.restore import RestoreError
from salvusctl.backup.service import BackupService, UnknownBackup

__all__ = ["BackupXMLRPC", "rpcSafe", "FAULTS"]

FAULTS = {"unknown": 701, "refused": 702, "failed": 703}

_INT32 = 2**31 - 1


def rpcSafe(value: Any) -> Any:
    """Make a result marshallable by any XML-RPC peer."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -_INT32 - 1 <= value <= _INT32 else float(value)
    if isinstance(value, dict):
        return {str(k): rpcSafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rpcSafe(v) for v in value]
    return value


def _fault(failure):
    if failure.check(UnknownBackup, KeyError):
        raise xmlrpc.Fault(FAULTS["unknown"], str(failure.value))
    if failure.check(RestoreError, AlreadyRunning):
        raise xmlrpc.Fault(FAULTS["refused"], str(failure.value))
    raise xmlrpc.Fault(FAULTS["failed"], f"{type(failure.value).__name__}: {failure.value}")


class BackupXMLRPC(xmlrpc.XMLRPC):
    """XML-RPC face of a L{BackupService} (the admin mounts it; auth is the admin's)."""

    def __init__(self, service: BackupService):
        super().__init__(allowNone=True)
        self.service = service

    def _call(self, fn, *args):
        return maybeDeferred(fn, *args).addCallbacks(rpcSafe, _fault)

    def xmlrpc_run(self, name: str = ""):
        """Run a backup set now; returns its summary when it has finished."""
        return self._call(self.service.run, name or None)

    def xmlrpc_status(self):
        """Every set: idle or running (run id, phase, percent, bytes), last run, next due."""
        return self._call(self.service.status)

    def xmlrpc_list(self, name: str = ""):
        """Runs, oldest first (store rows and runs found only in the backup directory)."""
        return self._call(self.service.listRuns, name or None)

    def xmlrpc_log(self, run_id: str):
        """One run's log."""
        return self._call(self.service.runLog, run_id)

    def xmlrpc_verify(self, run_id: str = ""):
        """Restore a run into scratch space and compare; returns the report."""
        return self._call(self.service.verify, run_id or None)

    def xmlrpc_restore(self, run_id: str = "", dry_run: bool = False, name: str = ""):
        """Restore a run (default: newest good); with dry_run, only list the steps."""
        return self._call(self.service.restore, run_id or None, bool(dry_run), name or None)
