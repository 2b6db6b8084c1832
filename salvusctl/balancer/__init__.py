"""Salvus balancer."""
