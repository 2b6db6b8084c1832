"""Store errors with messages an operator can act on."""

__all__ = ["StoreError", "StoreClosed", "QueueFull"]


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreClosed(StoreError):
    """The store is not running (not started yet, or closed)."""


class QueueFull(StoreError):
    """The outage write queue is full; the oldest queued write was dropped."""
