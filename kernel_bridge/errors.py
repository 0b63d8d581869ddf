"""Typed errors shared by the worker and the scientist's client.

Every error that can cross the wire is a subclass of :class:`SyftError` and is
named in :data:`WIRE_ERRORS`, so the client can re-raise the same type the
worker raised. Messages say what the user can do next; they never carry
private values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

#: In IPython/Jupyter, syftlab's errors show as one line (``Type: message``) instead
#: of a traceback through the client's internals. ``SYFTLAB_FULL_TRACEBACKS=1`` (or
#: setting this to False) brings the full tracebacks back, for debugging syftlab itself.
SHORT_TRACEBACKS = os.environ.get("SYFTLAB_FULL_TRACEBACKS", "") in ("", "0")


class SyftError(Exception):
    """Base class of every syftlab error."""

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message, "data": self.data}

    @property
    def _render_traceback_(self) -> Callable[[], list[str]]:
        """IPython's hook for a custom traceback: the error's one line that matters."""
        if not SHORT_TRACEBACKS:
            raise AttributeError("_render_traceback_")  # IPython then shows the full one
        name = type(self).__name__
        return lambda: [f"\x1b[0;31m{name}\x1b[0m: {self.message or str(self)}"]


class ProtocolError(SyftError):
    """The peer sent something the protocol does not allow."""


class CodecError(ProtocolError):
    """A value cannot be encoded or a buffer cannot be decoded."""


class UnsupportedType(CodecError):
    """A value of a type outside the wire's closed set of types."""


class MalformedFrame(ProtocolError):
    """A frame whose bytes do not follow the frame layout."""


class FrameTooLarge(ProtocolError):
    """A frame larger than the configured limit."""


class QuotaExceeded(ProtocolError):
    """A request for more than the worker allows at once (upload bytes or tickets).

    ``data`` says which quota (``scope``: ``"session"`` or ``"worker"``), what was
    asked and what is left; nothing was reserved.
    """


class VersionMismatch(ProtocolError):
    """Client and worker share no wire version."""


class AuthenticationError(SyftError):
    """Missing, wrong or revoked token."""


class CertificateMismatch(AuthenticationError):
    """The worker's TLS certificate is not the one pinned by its fingerprint.

    Nothing was sent to it (no token, no ticket): check the fingerprint with the
    data owner (``syftlab tls fingerprint --state DIR`` on the worker's machine).
    """


class PermissionDenied(SyftError):
    """The caller may not touch this object or request."""


class UnknownObject(PermissionDenied):
    """No object with this id exists in the caller's session.

    Forged ids and other sessions' ids get this same answer, so that the reply
    does not tell whether the id exists elsewhere.
    """


class UnknownAsset(SyftError):
    """The worker has no asset with this name."""


class MethodNotAllowed(PermissionDenied):
    """A pointer operation outside the allow-list (dunders, module globals, I/O)."""


class ApprovalRequired(SyftError):
    """The value derives from private data; it leaves only through an approved request.

    Attributes
    ----------
    pointer : Pointer or None
        Filled in by the client: the pointer whose value was asked for.
    """

    pointer: Any = None

    def request(self, reason: str = "") -> Any:
        """Ask the owner for the value (a :class:`~kernel_bridge.Request`)."""
        if self.pointer is None:
            raise SyftError("this error is not attached to a pointer")
        return self.pointer.request(reason=reason)


class RequestDenied(SyftError):
    """The owner denied the request; ``reason`` says why."""


class RequestPending(SyftError):
    """The request has not been decided yet."""


class AlreadyDecided(SyftError, ValueError):
    """The request was decided before (``data["status"]``); a decision cannot change.

    The owner side turns a repeat of the same decision into a no-op; only the
    opposite decision raises this.
    """


class RemoteError(SyftError):
    """Code run on the worker raised; only the exception *type* is reported."""


class KernelDied(SyftError):
    """The session's kernel died; it has been restarted and its objects are gone."""


class ExecutionTimeout(SyftError):
    """Execution ran past its timeout and was interrupted."""


class Interrupted(SyftError):
    """Execution was interrupted at the client's request."""


class SandboxUnavailable(SyftError):
    """No OS sandbox is available and ``--unsafe-no-sandbox`` was not given."""


class OutputTooLarge(SyftError):
    """A cell's output or a kernel's reply passed the worker's size limit; the cell was
    interrupted and what passed the limit was dropped."""


class ConfigError(SyftError):
    """The worker's configuration is invalid."""


class ConnectionLost(SyftError):
    """The connection to the worker closed."""


class WorkerUnreachable(ConnectionLost):
    """No worker answered at the URL (refused, unknown host, timed out, not a worker)."""


class InvalidURL(SyftError, ValueError):
    """The worker URL is not a ``ws://host:port`` (or ``wss://``) address."""


class InvalidQuery(SyftError):
    """A DP query the worker will not run (unknown column, bounds outside the
    declaration, a bad ε, undeclared group keys, a pointer that is not an asset).

    Nothing is spent on an invalid query.
    """


class BudgetExhausted(SyftError):
    """A DP query would go past a privacy budget; nothing was spent.

    ``data`` holds what was asked (``epsilon``, ``delta``), which budget refused
    (``scope``: ``"scientist"`` or ``"total"``) and what remains
    (``epsilon_remaining``, ``delta_remaining``).
    """


# plans
class InvalidPlan(SyftError):
    """A plan document the worker will not accept (a missing or unknown field, a
    column the asset does not declare, an output form it cannot check)."""


class PlanPending(SyftError):
    """The owner has not decided the plan yet; it cannot run."""


class PlanDenied(SyftError):
    """The owner denied the plan (``reason`` says why); it never runs."""


class PlanRunsExhausted(SyftError):
    """The plan used all the runs its policy allows; nothing was run or spent."""


class PlanOutputRejected(SyftError):
    """A run's outputs were not of the form the policy declares (names, shapes,
    dtype, finite values); nothing was released (``output`` names the first
    output that failed, ``problem`` what was wrong with it, never its values)."""


class SecureAggregationRequired(PermissionDenied):
    """The plan's outputs leave only as part of a secure aggregate, never in the clear."""


# HE
class HEError(SyftError):
    """An HE context or ciphertext the worker will not use: one carrying a secret
    key, one too shallow for the computation, or one SEAL finds malformed.

    Nothing is counted or spent for a refused value.
    """


class PredictionLimitReached(PermissionDenied):
    """The owner's limit on encrypted predictions for this scientist is used up.

    ``data`` holds the ``asset`` and the ``limit``.
    """


# -- SMPC ----------------------------------------------------------------------
class SMPCError(SyftError):
    """A secure multi-party computation failed; no party holds on to it."""


class UntrustedParty(SMPCError, AuthenticationError):
    """A peer or dealer whose name and key the owner has not pinned (``[smpc]``, trust file)."""


class MessageRejected(SMPCError):
    """A party-to-party message was forged, altered, reordered or replayed; it was dropped.

    ``data["why"]`` is one of ``forged``, ``replayed``, ``misrouted``, ``malformed``.
    """


class PartyUnavailable(SMPCError):
    """A party (or the dealer) died, left or did not answer in time mid-protocol.

    The computation is cancelled on every other party; ``data["party"]`` names it.
    """


# fl
class RoundFailed(SyftError):
    """An FL round ended with fewer workers than its policy's minimum; the job stopped.

    ``data`` holds the ``round``, how many workers ``finished`` and ``min_workers``.
    The model keeps the rounds before it.
    """


WIRE_ERRORS: dict[str, type[SyftError]] = {
    cls.__name__: cls
    for cls in (
        SyftError,
        ProtocolError,
        CodecError,
        UnsupportedType,
        MalformedFrame,
        FrameTooLarge,
        QuotaExceeded,
        VersionMismatch,
        AuthenticationError,
        CertificateMismatch,
        PermissionDenied,
        UnknownObject,
        UnknownAsset,
        MethodNotAllowed,
        ApprovalRequired,
        RequestDenied,
        RequestPending,
        AlreadyDecided,
        RemoteError,
        KernelDied,
        ExecutionTimeout,
        Interrupted,
        SandboxUnavailable,
        OutputTooLarge,
        ConfigError,
        ConnectionLost,
        WorkerUnreachable,
        InvalidURL,
        InvalidQuery,
        BudgetExhausted,
        # plans
        InvalidPlan,
        PlanPending,
        PlanDenied,
        PlanRunsExhausted,
        PlanOutputRejected,
        SecureAggregationRequired,
        HEError,
        PredictionLimitReached,
        SMPCError,
        UntrustedParty,
        MessageRejected,
        PartyUnavailable,
    )
}


def from_wire(payload: dict[str, Any]) -> SyftError:
    """Rebuild an error sent by the peer; unknown names become :class:`SyftError`."""
    cls = WIRE_ERRORS.get(str(payload.get("type")), SyftError)
    data = payload.get("data") or {}
    err = cls(str(payload.get("message", "")), **(data if isinstance(data, dict) else {}))
    return err
