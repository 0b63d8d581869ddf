"""Pointer operations: the allow-list shared by the worker and its kernel agent."""
