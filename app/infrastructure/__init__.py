"""Composition root: settings, logging, wiring, CLI."""
