"""Unit suite: rules and services on fakes."""
