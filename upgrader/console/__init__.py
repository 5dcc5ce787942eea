"""The admin console at /upgrader/admin (a small Flask application of its own)."""
