"""Adapters: one package per outside system."""
