"""Salvus cluster."""
