"""Builder: all of a host's C{Backup} declarations become one L{BackupService}."""

from __future__ import annotations

from typing import Any

from salvusctl.backup.declare import Backup
from salvusctl.backup.records import BACKUP_MIGRATIONS
from salvusctl.backup.service import BackupService
from salvusctl.errors import ConfigError
from salvusctl.interfaces import supervisorOf

__all__ = ["buildBackup", "checkSets"]


def checkSets(declarations: list[Backup], host=None) -> None:
    """Refuse two sets with one name or one destination (L{ConfigError}); validates each."""
    names: set[str] = set()
    destinations: set[str] = set()
    for declaration in declarations:
        if declaration.destination is None:
            declaration.validate(host)
        if declaration.name in names:
            raise ConfigError(f"two backup sets are named {declaration.name!r}")
        where = str(declaration.destination)
        if where in destinations:
            raise ConfigError(f"backup {declaration.name!r}: destination {where} is used by another set")
        names.add(declaration.name)
        destinations.add(where)


def buildBackup(context: Any, declarations: list[Backup],
                supervisor: Any = None) -> BackupService | None:
    """Validate the sets together (names and destinations unique) and build the service over the
    host's C{supervisor} service (a restore stops and starts the deploys of its database); stale
    runs are marked once the store has started.

    The store learns the backup tables here, before it starts.
    """
    if not declarations:
        return None
    checkSets(declarations, context.host)
    context.store.addMigrations("backup", BACKUP_MIGRATIONS)
    return BackupService(
        context.reactor,
        context.store,
        list(declarations),
        host_name=context.host.name,
        work_dir=context.path("backup"),
        supervisor=supervisorOf(supervisor),
        ready=context.storeReady,
    )
