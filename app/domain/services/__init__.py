"""Async use cases combining domain rules and ports."""
