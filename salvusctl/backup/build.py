"""Builder: all of a host's C{Backup} declarations become one L{BackupService}."""

from __future__ import annotations

from salvusctl.backup.declare import Backup
from salvusctl.backup.records import BACKUP_MIGRATIONS
from salvusctl.backup.service import BackupService
from salvusctl.errors import ConfigError
from salvusctl.interfaces import ISupervisor

__all__ = ["buildBackup", "checkSets"]


def _findSupervisor(context):
    """The host's L{ISupervisor}: the supervisor service itself or an object it holds."""
    service = context.services.get("supervisor")
    if service is None:
        return None
    if ISupervisor.providedBy(service):
        return service
    for attribute in ("supervisor", "control"):
        candidate = getattr(service, attribute, None)
        if candidate is not None and ISupervisor.providedBy(candidate):
            return candidate
    return None


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


def buildBackup(context, declarations: list[Backup]) -> BackupService | None:
    """Validate the sets together (names and destinations unique) and build the service.

    The store learns the backup tables here, before it starts.
    """
    if not declarations:
        return None
    checkSets(declarations, context.host)
    context.store.addMigrations("backup", BACKUP_MIGRATIONS)
    store_service = context.services.get("store")
    return BackupService(
        context.reactor,
        context.store,
        list(declarations),
        host_name=context.host.name,
        work_dir=context.path("backup"),
        supervisor=lambda: _findSupervisor(context),
        ready=(lambda: getattr(store_service, "ready", None)),
    )
