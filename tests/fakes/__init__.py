"""In-memory ports shared by both suites."""
