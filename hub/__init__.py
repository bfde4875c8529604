"""OCPI 2.2.1 roaming hub: the HTTP service (OCPI endpoints, registration, admin, storage)."""

__version__ = "0.1.0"
