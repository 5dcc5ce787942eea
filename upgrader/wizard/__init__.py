"""The install wizard: licence, checks, backup, live progress; mounted at /install."""
