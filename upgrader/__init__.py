"""upgrader: an application upgrade-state guard for Python web applications.

The public API: `resolve()` settings, `diagnose()` an installation, and read
the `Diagnosis` it returns. See docs/architecture.md for the layers.
"""

from upgrader.core.diagnosis import CodeFacts, Diagnosis, State, decide, diagnose, load_code_facts
from upgrader.settings import ConfigError, Settings, resolve

__version__ = "0.1.0"

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
