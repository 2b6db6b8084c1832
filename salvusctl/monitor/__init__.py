"""Salvus monitor."""
