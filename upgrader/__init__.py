"""upgrader: an application upgrade-state guard for Python web applications.

The public API: `resolve()` settings, `diagnose()` an installation, and read
the `Diagnosis` it returns. See docs/architecture.md for the layers.

The names are loaded when first used (PEP 562): importing a part of the package, such
as the console script's entry, does not load all of it.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upgrader.core.diagnosis import (
        CodeFacts,
        Diagnosis,
        State,
        decide,
        diagnose,
        load_code_facts,
    )
    from upgrader.settings import ConfigError, Settings, resolve

__version__ = "0.1.0"

# A library logs and leaves the handling to the application (logging's own advice): with
# no handler configured, nothing is printed. The CLI prints with UPGRADER_LOG_LEVEL set.
logging.getLogger("upgrader").addHandler(logging.NullHandler())

_API = {
    "CodeFacts": "upgrader.core.diagnosis",
    "Diagnosis": "upgrader.core.diagnosis",
    "State": "upgrader.core.diagnosis",
    "decide": "upgrader.core.diagnosis",
    "diagnose": "upgrader.core.diagnosis",
    "load_code_facts": "upgrader.core.diagnosis",
    "ConfigError": "upgrader.settings",
    "Settings": "upgrader.settings",
    "resolve": "upgrader.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'upgrader' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


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
