"""Salvus alerts."""
