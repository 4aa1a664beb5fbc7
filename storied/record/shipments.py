"""Workers' transitions on their way to a durable scheduler's ledger: packed once, by the worker.

A worker ships what it made as the bytes of a ledger block (its columns, msgpack-packed and
LZ4-compressed, as ``pack_block`` makes them) beside the names they mention and their time
span (``pack_shipment``). The scheduler's event loop checks the few fields of that message and
never unpacks the transitions (``checked_shipment``); the ledger's writer stores the bytes as
they came, with the seqs and the worker the scheduler gave them (``shipped_block``), and indexes
the names the worker listed. Neither spends anything per shipped transition: the columns are
checked where they are read (``shipped_columns``), and a malformed shipment is skipped there.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

from storied.record.blocks import names_text, pack_block, unpack_block
from storied.record.events import pack_msg

#: What a worker ships its transitions as: one list per field, in this order.
SHIPPED_COLUMNS = ("keys", "starts", "finishes", "recommendations", "stimulus_ids", "timestamps")


class MalformedShipmentError(ValueError):
    """A shipment whose transitions are not what ``SHIPPED_COLUMNS`` says."""


class Shipment(NamedTuple):
    """A worker's shipment as the scheduler takes it: the block, and what the ledger needs."""

    block: bytes
    count: int
    names: str
    first_time: float
    last_time: float


def pack_shipment(columns: Sequence[list[Any]]) -> list[Any]:
    """The ``transitions`` of a ``worker-records`` message: transitions given as
    ``SHIPPED_COLUMNS``, packed as a block, with the names they mention and their time span."""
    keys, _, _, recommendations, stimulus_ids, timestamps = columns
    return [
        pack_block(list(columns)),
        len(keys),
        names_text(keys, stimulus_ids, recommendations),
        min(timestamps),
        max(timestamps),
    ]


def checked_shipment(shipped: Any) -> Shipment:
    """A ``pack_shipment`` message, its fields checked; the transitions stay packed.

    Raises ``ValueError`` saying what is wrong: the message comes from another process.
    """
    if not isinstance(shipped, list | tuple) or len(shipped) != len(Shipment._fields):
        raise ValueError(
            f"expected a packed shipment, the {len(Shipment._fields)} fields {Shipment._fields}"
        )
    block, count, names, first_time, last_time = shipped
    if not isinstance(block, bytes) or not isinstance(names, str):
        raise ValueError("the block must be bytes and the names a str")
    if type(count) is not int or count < 0:
        raise ValueError("the count must be an int >= 0")
    if not {type(first_time), type(last_time)} <= {float, int}:
        raise ValueError("the time span must be numbers")
    return Shipment(block, count, names, first_time, last_time)


def shipped_block(where: str, first_seq: int, shipment: Shipment) -> bytes:
    """The ``transition_blocks.entries`` of a shipment: its bytes as they came, with the seq of
    its first transition and the worker that made them (packing copies the bytes, no more)."""
    return pack_msg(
        {"where": where, "first_seq": first_seq, "count": shipment.count, "shipped": shipment.block}
    )


def shipped_columns(block: dict[str, Any]) -> tuple[list[Sequence[Any]], list[dict[str, str]]]:
    """A ``shipped_block``'s transitions as block columns (seq, key, start, finish, stimulus id,
    timestamp, where, worker) and their recommendations.

    Raises ``MalformedShipmentError`` if the worker's columns are not as they should be.
    """
    try:
        columns = checked_columns(unpack_block(block["shipped"]))
    except (ValueError, TypeError, KeyError) as error:
        raise MalformedShipmentError(
            f"the transitions {block.get('where')!r} shipped from seq {block.get('first_seq')} "
            f"on are malformed: {error}"
        ) from error
    keys, starts, finishes, recommendations, stimulus_ids, timestamps = columns
    count, first_seq = len(keys), block["first_seq"]
    if count != block["count"]:
        raise MalformedShipmentError(
            f"the transitions {block['where']!r} shipped from seq {first_seq} on are "
            f"{count}, not {block['count']} as announced"
        )
    seqs = list(range(first_seq, first_seq + count))
    where = [block["where"]] * count
    return [seqs, keys, starts, finishes, stimulus_ids, timestamps, where, [None] * count], (
        recommendations
    )


def checked_columns(columns: Any) -> list[list[Any]]:
    """Shipped transition columns, checked in bulk (no Python code per transition).

    Raises ``ValueError`` saying what is wrong: the columns come from another process.
    """
    if not isinstance(columns, list | tuple) or len(columns) != len(SHIPPED_COLUMNS):
        raise ValueError(f"expected the {len(SHIPPED_COLUMNS)} columns {SHIPPED_COLUMNS}")
    if not all(isinstance(column, list) for column in columns):
        raise ValueError("every column must be a list")
    keys, starts, finishes, recommendations, stimulus_ids, timestamps = columns
    if len(set(map(len, columns))) > 1:
        raise ValueError("the columns differ in length")
    if not set(map(type, chain(keys, starts, finishes, stimulus_ids))) <= {str}:
        raise ValueError("keys, states and stimulus ids must be str")
    if not set(map(type, timestamps)) <= {float, int}:
        raise ValueError("timestamps must be numbers")
    if not set(map(type, recommendations)) <= {dict}:
        raise ValueError("recommendations must be dicts")
    named = chain.from_iterable(recommendations)
    recommended = chain.from_iterable(map(dict.values, recommendations))
    if not set(map(type, chain(named, recommended))) <= {str}:
        raise ValueError("recommendations must map str to str")
    return list(columns)
