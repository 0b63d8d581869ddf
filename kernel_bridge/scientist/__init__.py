"""Scientist side: connection, Worker, Pointer, Request, Receipt, launch."""
