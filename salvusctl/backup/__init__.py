"""Salvus backup."""
