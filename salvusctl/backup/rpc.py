"""The backup verbs over XML-RPC: mount with C{root.putSubHandler("backup", BackupXMLRPC(service))}.

Methods: C{backup.run([NAME])}, C{backup.status()}, C{backup.list([NAME])}, C{backup.log(RUN)},
C{backup.verify(RUN)}, C{backup.restore([RUN], [DRY_RUN], [NAME])}.  Results are plain structs;
C{None} becomes C{""} and integers beyond XML-RPC's 32 bits become doubles, so any XML-RPC client
reads them.  Errors are faults of the admin's one table (L{salvusctl.admin.faults.Faults}): an
unknown set or run is C{BAD_NAME}, a request the backup's state refuses (a run in progress, no
good run to restore) C{REFUSED}; anything else is not converted here, so the admin logs it with
its traceback and answers a generic C{FAILED}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web import xmlrpc

from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.backup.job import AlreadyRunning
from salvusctl.backup.restore import RestoreError
from salvusctl.backup.service import BackupService, UnknownBackup

__all__ = ["BackupXMLRPC", "rpcSafe"]

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
    if failure.check(UnknownBackup):
        value = failure.value
        raise rpcFault(Faults.BAD_NAME, str(value.args[0]) if value.args else "")
    if failure.check(RestoreError, AlreadyRunning):
        raise rpcFault(Faults.REFUSED, str(failure.value))
    return failure


class BackupXMLRPC(xmlrpc.XMLRPC):
    """XML-RPC face of a L{BackupService} (the admin mounts it; auth is the admin's)."""

    def __init__(self, service: BackupService):
        super().__init__(allowNone=True)
        self.service = service

    def _call(self, fn, *args):
        return maybeDeferred(fn, *args).addCallbacks(rpcSafe, _fault)

    def xmlrpc_run(self, name: str = "") -> Deferred[dict]:
        """Run a backup set now; returns its summary when it has finished

        @param name the backup set ('' when the host has one)
        @return the run's summary
        """
        return self._call(self.service.run, name or None)

    def xmlrpc_status(self) -> Deferred[list]:
        """Every set: idle or running (run id, phase, percent, bytes), last run, next due

        @return one struct per backup set
        """
        return self._call(self.service.status)

    def xmlrpc_list(self, name: str = "") -> Deferred[list]:
        """Runs, oldest first (store rows and runs found only in the backup directory)

        @param name only this backup set's runs ('' for all)
        @return one struct per run
        """
        return self._call(self.service.listRuns, name or None)

    def xmlrpc_log(self, run_id: str) -> Deferred[str]:
        """One run's log

        @param run_id the run
        @return the log's text
        """
        return self._call(self.service.runLog, run_id)

    def xmlrpc_verify(self, run_id: str = "") -> Deferred[dict]:
        """Restore a run into scratch space and compare; returns the report

        @param run_id the run ('' for the newest good one)
        @return the report: ok, checked, problems
        """
        return self._call(self.service.verify, run_id or None)

    def xmlrpc_restore(self, run_id: str = "", dry_run: bool = False, name: str = "") -> Deferred[dict]:
        """Restore a run (default: newest good); with dry_run, only list the steps

        @param run_id the run ('' for the newest good one)
        @param dry_run only list the steps
        @param name the backup set ('' when the host has one)
        @return the report: steps and their outcome
        """
        return self._call(self.service.restore, run_id or None, bool(dry_run), name or None)
