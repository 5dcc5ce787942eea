"""The command line: thin click commands over the core and the engine."""
