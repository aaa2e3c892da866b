"""SQL persistence on SQLAlchemy 2 async: SQLite (default) and PostgreSQL."""

from app.adapters.sql.audit import SqlLedgerAudit
from app.adapters.sql.database import SqlDatabase
from app.adapters.sql.health import SqlStorageHealth
from app.adapters.sql.jobs import SqlJobLeases
from app.adapters.sql.ledger import SqlLedger
from app.adapters.sql.migrations import head_revision, migrate

__all__ = ["SqlDatabase", "SqlJobLeases", "SqlLedger", "SqlLedgerAudit", "SqlStorageHealth", "head_revision", "migrate"]
