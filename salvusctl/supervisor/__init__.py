"""Salvus supervisor."""
