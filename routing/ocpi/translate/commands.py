"""Commands between OCPI 2.1.1, 2.2.1 and 2.3.0 (docs/versions.md, "Commands")."""

from __future__ import annotations
