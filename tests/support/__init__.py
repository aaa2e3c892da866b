"""Shared test support: backend discovery, servers the suites start."""
