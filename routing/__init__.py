"""Routing decisions and the Redis-backed delivery queues."""
