"""Domain rule tests."""
