"""Keyed pseudonyms for people: the ban registry never holds an ID number."""

from __future__ import annotations

import hashlib
import hmac
import re

from models.errors import DomainError

_ID_NUMBER = re.compile(r"^\d{17}[\dX]$")


def person_key(id_number: str, secret: bytes) -> str:
    """HMAC-SHA256 of a normalised resident ID number, hex encoded.

    Without ``secret`` the key cannot be recomputed from a guessed number, so the
    registry of banned people reveals nobody.
    """
    normalised = id_number.strip().upper()
    if not _ID_NUMBER.match(normalised):
        raise DomainError("INVALID_ID_NUMBER", "身份证号码格式不正确（应为 18 位）")
    if len(secret) < 16:
        raise ValueError("the person-key secret must be at least 16 bytes")
    return hmac.new(secret, normalised.encode(), hashlib.sha256).hexdigest()


__all__ = ["person_key"]
