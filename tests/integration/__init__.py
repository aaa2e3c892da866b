"""Integration suite: real backends."""
