"""Token revocation reaches live sessions: a revoked token's connections close.

The owner revokes (or replaces) a token from another process (``syftlab token
revoke``, :class:`~kernel_bridge.owner.owner_api.Owner`), which only writes the
state database. :class:`RevocationWatch` reads the tokens still valid every
:data:`CHECK_INTERVAL` seconds; each session opened with a token no longer among
them is closed (code 1008, "token revoked") and dropped with its kernels, so it
cannot be resumed either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .store import Store

log = logging.getLogger("syftlab.worker")

#: Seconds between two checks of the token table.
CHECK_INTERVAL = 0.5


class RevocationWatch:
    """Closes the sessions of revoked tokens.

    Parameters
    ----------
    store : Store
        The worker's state (its token table).
    sessions : dict
        The worker's live sessions by id (dropped sessions are removed from it).
    """

    def __init__(self, store: Store, sessions: dict[str, Any]) -> None:
        self.store = store
        self.sessions = sessions
        self._token_of: dict[str, str] = {}  # session id -> hash of the token it opened with

    def track(self, session: Any, token_hash: str) -> None:
        """Remember which token ``session`` (re)authenticated with."""
        self._token_of[session.id] = token_hash

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Check forever (a task of the worker)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # a busy database must not end the watch
                log.exception("token revocation check failed")

    async def check(self) -> None:
        """One pass: close and drop the sessions whose token is no longer valid."""
        for sid in [s for s in self._token_of if s not in self.sessions]:
            del self._token_of[sid]  # reaped or shut down otherwise
        if not self._token_of:
            return
        valid = self.store.active_token_hashes()
        for sid, token_hash in list(self._token_of.items()):
            if token_hash in valid:
                continue
            del self._token_of[sid]
            session = self.sessions.pop(sid, None)
            if session is None:
                continue
            self.store.audit(session.scientist, "session_revoked", {"session": sid})
            ws = session.connection
            session.connection = None
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close(1008, "token revoked")
            with contextlib.suppress(Exception):
                await session.shutdown()
