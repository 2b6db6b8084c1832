"""Store errors with messages an operator can act on."""

__all__ = ["StoreError", "StoreClosed", "StoreCorrupt", "StoreUnavailable", "QueueFull"]


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreClosed(StoreError):
    """The store is not running (not started yet, or closed)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now: reads fail at once instead of hanging.

    Writes are not failed with this error; they are queued and replayed when the database returns.
    """


class QueueFull(StoreError):
    """The outage write queue is full; the oldest queued write was dropped."""


class StoreCorrupt(StoreError):
    """The database file exists but is not a readable database; it is kept as it is."""
