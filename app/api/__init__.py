"""HTTP edge: controllers, schemas and error mapping."""
