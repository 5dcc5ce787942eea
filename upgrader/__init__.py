"""upgrader: an application upgrade-state guard for Python web applications.

The public API: `resolve()` settings, `diagnose()` an installation, and read
the `Diagnosis` it returns. See docs/architecture.md for the layers.
"""

import logging

from upgrader.core.diagnosis import CodeFacts, Diagnosis, State, decide, diagnose, load_code_facts
from upgrader.settings import ConfigError, Settings, resolve

__version__ = "0.1.0"

# A library logs and leaves the handling to the application (logging's own advice): with
# no handler configured, nothing is printed. The CLI prints with UPGRADER_LOG_LEVEL set.
logging.getLogger("upgrader").addHandler(logging.NullHandler())

__all__ = [
    "CodeFacts",
    "ConfigError",
    "Diagnosis",
    "Settings",
    "State",
    "__version__",
    "decide",
    "diagnose",
    "load_code_facts",
    "resolve",
]
