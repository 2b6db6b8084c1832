"""Salvus admin."""
