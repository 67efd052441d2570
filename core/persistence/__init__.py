"""SQLAlchemy models, the database runner and the repository functions."""
