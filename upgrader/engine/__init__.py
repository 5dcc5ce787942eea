"""The engine layer: locks, backups and migrations. No Flask here either."""
