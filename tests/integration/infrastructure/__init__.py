"""Integration tests of the composition root: the CLI and the served app."""
