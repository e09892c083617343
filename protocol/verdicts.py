"""What a validator answers (`ACCEPT` or `Reject`), and the two shapes of validator
(protocol/validators.py runs them in a chain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.envelope import Envelope
from protocol.errors import RejectReason
from protocol.messages import Message


@dataclass(frozen=True, slots=True)
class Accept:
    """The validator found nothing wrong."""


ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str = ""
    blame: bool = True  # False: counted, but charged to no peer (nobody is provably at fault)


Verdict = Accept | Reject


class EnvelopeValidator(Protocol):
    def __call__(self, envelope: Envelope) -> Verdict: ...


class MessageValidator(Protocol):
    def __call__(self, envelope: Envelope, message: Message) -> Verdict: ...
