"""SQL adapter tests on real SQLite and PostgreSQL."""
