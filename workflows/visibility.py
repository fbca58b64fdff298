"""Custom search attributes: where every application stands, for ops and for the meeting.

Never a name, ID number or employer: search attributes are not encrypted by a codec and
are visible to anyone who can list workflows.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

CYCLE = SearchAttributeKey.for_keyword("Cycle")
STAGE = SearchAttributeKey.for_keyword("Stage")
LEVEL = SearchAttributeKey.for_keyword("Level")
SUBMISSION_ROUND = SearchAttributeKey.for_int("SubmissionRound")
FEE_PAID = SearchAttributeKey.for_bool("FeePaid")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("NextDeadline")

SEARCH_ATTRIBUTES: dict[str, tuple[str, IndexedValueType.ValueType]] = {
    CYCLE.name: ("Keyword", IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    STAGE.name: ("Keyword", IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    LEVEL.name: ("Keyword", IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD),
    SUBMISSION_ROUND.name: ("Int", IndexedValueType.INDEXED_VALUE_TYPE_INT),
    FEE_PAID.name: ("Bool", IndexedValueType.INDEXED_VALUE_TYPE_BOOL),
    NEXT_DEADLINE.name: ("Datetime", IndexedValueType.INDEXED_VALUE_TYPE_DATETIME),
}


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` flags that register every attribute."""
    flags: list[str] = []
    for name, (kind, _) in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


async def register_search_attributes(client: Client) -> None:
    """Register every attribute through the operator service (the time-skipping server)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={name: kind for name, (_, kind) in SEARCH_ATTRIBUTES.items()},
        )
    )


__all__ = [
    "CYCLE",
    "FEE_PAID",
    "LEVEL",
    "NEXT_DEADLINE",
    "SEARCH_ATTRIBUTES",
    "STAGE",
    "SUBMISSION_ROUND",
    "dev_server_flags",
    "register_search_attributes",
]
