"""The worker's services; :mod:`.base` says how to add one."""

from .base import Handler, Service

__all__ = ["Handler", "Service"]
