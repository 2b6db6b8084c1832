"""The demo host's worker program (run as a supervised child)."""
