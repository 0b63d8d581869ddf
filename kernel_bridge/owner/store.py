"""The worker's durable state: one SQLite file in the state directory.

Tokens (hashed), sessions, requests with their snapshots, and the audit log.
Everything that must survive a crash is committed (WAL, ``synchronous=FULL``)
before anything is released to a scientist. The worker process and the owner's
tools (CLI, :class:`~kernel_bridge.owner.owner_api.Owner`) open the same file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AlreadyDecided, SyftError
from ..wire.protocol import RequestInfo

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    scientist TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scientist TEXT NOT NULL,
    session_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    snapshot TEXT NOT NULL,
    lineage TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    deny_reason TEXT,
    created REAL NOT NULL,
    decided REAL,
    released INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

DB_NAME = "worker.sqlite"


def hash_token(token: str) -> str:
    """SHA-256 of a token; tokens are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class RequestRow:
    """One request as stored."""

    id: int
    scientist: str
    session_id: str
    object_id: str
    kind: str
    value_type: str
    reason: str
    sha256: str
    size: int
    snapshot: str
    lineage: list[dict[str, Any]]
    status: str
    deny_reason: str | None
    created: float
    decided: float | None
    released: int

    def public(self) -> RequestInfo:
        """What the requester may see about their own request.

        No snapshot path, and neither the snapshot's digest nor its size: both
        depend on the private value, and a digest seen before a decision (or
        after a denial) would let the scientist confirm guesses of a small
        secret. The digest comes only with the released value.
        """
        return {
            "id": self.id, "object_id": self.object_id, "kind": self.kind,
            "value_type": self.value_type, "reason": self.reason,
            "status": self.status, "deny_reason": self.deny_reason,
            "created": self.created, "decided": self.decided,
        }


class Store:
    """Access to a worker's state directory.

    Parameters
    ----------
    state_dir : str or Path
        Created (mode 0700) if missing.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.snapshots = self.dir / "snapshots"
        self.snapshots.mkdir(exist_ok=True, mode=0o700)
        self.path = self.dir / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- tokens ---------------------------------------------------------------
    def add_token(self, name: str) -> str:
        """Create (or replace) the token of scientist ``name``; returns the token once."""
        if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
            raise ValueError("a scientist name is 1-64 letters, digits, '-' or '_'")
        token = "syft_" + secrets.token_urlsafe(32)
        with self._tx():
            self.db.execute(
                "INSERT INTO tokens(name, hash, created) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET hash=excluded.hash, "
                "created=excluded.created, revoked=0",
                (name, hash_token(token), time.time()),
            )
            self._audit("owner", "token_add", {"scientist": name})
        return token

    def revoke_token(self, name: str) -> bool:
        with self._tx():
            cur = self.db.execute("UPDATE tokens SET revoked=1 WHERE name=?", (name,))
            self._audit("owner", "token_revoke", {"scientist": name})
        return cur.rowcount > 0

    def tokens(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, created, revoked FROM tokens ORDER BY name")
        return [dict(r) for r in rows]

    def active_token_hashes(self) -> set[str]:
        """Hashes of the tokens not revoked (what live sessions are checked against)."""
        return {str(r["hash"]) for r in self.db.execute("SELECT hash FROM tokens WHERE revoked=0")}

    def scientist_for(self, token: str) -> str | None:
        """The scientist a token belongs to, or None (constant-time compare)."""
        if not isinstance(token, str) or len(token) > 256:
            return None
        want = hash_token(token)
        row = self.db.execute(
            "SELECT name, hash FROM tokens WHERE hash=? AND revoked=0", (want,)
        ).fetchone()
        if row is None or not hmac.compare_digest(row["hash"], want):
            return None
        return str(row["name"])

    # -- sessions -------------------------------------------------------------
    def add_session(self, session_id: str, scientist: str) -> None:
        with self._tx():
            self.db.execute("INSERT INTO sessions(id, scientist, created) VALUES (?, ?, ?)",
                            (session_id, scientist, time.time()))
            self._audit(scientist, "session_open", {"session": session_id})

    # -- requests -------------------------------------------------------------
    def add_request(
        self, *, scientist: str, session_id: str, object_id: str, kind: str,
        value_type: str, reason: str, frame: bytes | memoryview,
        lineage: list[dict[str, Any]],
    ) -> RequestRow:
        """Store a snapshot (fsynced) and its request row; returns the row."""
        data = memoryview(frame).cast("B")
        digest = hashlib.sha256(data).hexdigest()
        name = f"{int(time.time() * 1000)}-{secrets.token_hex(6)}.frame"
        path = self.snapshots / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            pos = 0
            while pos < data.nbytes:
                pos += os.write(fd, data[pos:])
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO requests(scientist, session_id, object_id, kind, value_type, "
                "reason, sha256, size, snapshot, lineage, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scientist, session_id, object_id, kind, value_type, reason, digest,
                 data.nbytes, name, json.dumps(lineage), time.time()),
            )
            rid = int(cur.lastrowid or 0)
            self._audit(scientist, "request", {"request": rid, "object": object_id,
                                               "sha256": digest, "reason": reason})
        row = self.request(rid)
        assert row is not None
        return row

    def request(self, request_id: int) -> RequestRow | None:
        row = self.db.execute("SELECT * FROM requests WHERE id=?", (int(request_id),)).fetchone()
        return None if row is None else self._row(row)

    def requests(self, status: str | None = None, scientist: str | None = None
                 ) -> list[RequestRow]:
        sql, args = "SELECT * FROM requests WHERE 1=1", []
        if status:
            sql += " AND status=?"
            args.append(status)
        if scientist:
            sql += " AND scientist=?"
            args.append(scientist)
        return [self._row(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def decide(self, request_id: int, approve: bool, reason: str | None = None,
               actor: str = "owner") -> RequestRow:
        """Approve or deny a pending request (a decided one cannot change)."""
        status = "approved" if approve else "denied"
        with self._tx():
            cur = self.db.execute(
                "UPDATE requests SET status=?, deny_reason=?, decided=? "
                "WHERE id=? AND status='pending'",
                (status, None if approve else reason, time.time(), int(request_id)),
            )
            if cur.rowcount != 1:
                row = self.request(request_id)
                if row is None:
                    raise KeyError(f"no request {request_id}")
                raise AlreadyDecided(f"request {request_id} is already {row.status}",
                                     request=int(request_id), status=row.status)
            self._audit(actor, status, {"request": int(request_id), "reason": reason})
        row = self.request(request_id)
        assert row is not None
        return row

    def snapshot_bytes(self, row: RequestRow) -> bytes:
        """The snapshot's bytes, checked against the hash stored with the request."""
        data = (self.snapshots / row.snapshot).read_bytes()
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise SyftError(f"the stored snapshot of request {row.id} does not match the hash "
                            "the owner approved; it will not be released")
        return data

    def record_release(self, row: RequestRow) -> None:
        """Commit the release to the audit log; call *before* sending the value."""
        with self._tx():
            self.db.execute("UPDATE requests SET released=released+1 WHERE id=?", (row.id,))
            self._audit(row.scientist, "release", {"request": row.id, "sha256": row.sha256,
                                                   "size": row.size})

    # -- audit ----------------------------------------------------------------
    def audit(self, actor: str, event: str, detail: dict[str, Any]) -> None:
        with self._tx():
            self._audit(actor, event, detail)

    def audit_log(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        out = [dict(r) for r in rows]
        for r in out:
            r["detail"] = json.loads(r["detail"])
        return out[::-1]

    def _audit(self, actor: str, event: str, detail: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO audit(ts, actor, event, detail) VALUES (?, ?, ?, ?)",
                        (time.time(), actor, event, json.dumps(detail, default=str)))

    def _tx(self) -> _Tx:
        return _Tx(self.db)

    @staticmethod
    def _row(r: sqlite3.Row) -> RequestRow:
        d = dict(r)
        d["lineage"] = json.loads(d["lineage"])
        return RequestRow(**d)


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken up front."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
