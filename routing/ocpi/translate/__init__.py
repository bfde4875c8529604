"""Object translation between OCPI 2.1.1, 2.2.1 and 2.3.0, with loss reports (docs/versions.md).

Importing the package registers every translator.
"""

from routing.ocpi.translate import cdrs, commands, locations, sessions, tariffs, tokens  # noqa: F401  (registration)
from routing.ocpi.translate.base import (
    Context,
    Loss,
    Translated,
    Untranslatable,
    translatable,
    translate,
)

__all__ = ["Context", "Loss", "Translated", "Untranslatable", "translatable", "translate"]
