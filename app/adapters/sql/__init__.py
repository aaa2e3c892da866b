"""SQL persistence on SQLAlchemy 2 async: SQLite (default) and PostgreSQL."""
