"""Sending one batch of messages and collecting what comes back within a deadline.

``Grid.send_and_receive`` sleeps 3 s between pulls in a real deployment; this polls at ``poll`` seconds and
maps every reply to the node it was sent to through ``reply_to_message_id`` (error replies the SuperLink makes
up for an unavailable node carry the SuperLink's id as source, not the node's).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["Exchange", "exchange"]


@dataclass
class Exchange:
    """Replies by destination node: ``ok`` (content), ``errors`` (code and reason) and ``missing`` (nothing came
    back before the deadline)."""

    ok: dict[int, Message] = field(default_factory=dict)
    errors: dict[int, tuple[int, str]] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    seconds: float = 0.0


def exchange(grid: Grid, messages: Sequence[Message], *, timeout: float, poll: float = 0.1) -> Exchange:
    start = time.monotonic()
    grid.push_messages(list(messages))  # writes each message's id into its metadata
    to_node = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    result = Exchange()
    pending = set(to_node)
    while pending:
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid not in pending:
                continue
            pending.discard(mid)
            node = to_node[mid]
            if reply.has_error():
                result.errors[node] = (int(reply.error.code), str(reply.error.reason))
            else:
                result.ok[node] = reply
        if pending and time.monotonic() - start < timeout:
            time.sleep(poll)
        elif pending:
            break
    result.missing = sorted(to_node[mid] for mid in pending)
    result.missing += [m.metadata.dst_node_id for m in messages if not m.metadata.message_id]
    result.seconds = time.monotonic() - start
    return result
