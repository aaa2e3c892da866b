"""Adapters for the host system: the wall clock."""
