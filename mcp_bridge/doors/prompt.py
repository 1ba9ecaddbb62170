"""What the doors hand the run service from what they receive: AI SDK `UIMessage`s (or plain
`{role, content}`) become the newest request and the earlier conversation (`start`'s `messages`), and for
Compass the user's context becomes the run's `system` prompt. A follow-up in a conversation the service already
holds sends only the newest user message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_PROMPT_CHARS = 1_000_000
"""The run service reads a request line of up to 4 MiB; a prompt this long is far beyond any model's context."""
_CONTEXT_ITEMS = 50
_ITEM_CHARS = 500


class PromptError(ValueError):
    """The messages cannot make a prompt; the message says what to send instead."""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message: its `text` parts (UIMessage), or its `content` when that is a string."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts", content)
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping) and p.get("type") == "text")


def _check(messages: Any) -> Sequence[Mapping[str, Any]]:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
        raise PromptError("`messages` must be a non-empty list of messages ({role, parts} or {role, content})")
    if messages[-1].get("role") != "user" or not message_text(messages[-1]).strip():
        raise PromptError("the last message must be the user's, with text")
    return messages


def latest_user_text(messages: Any) -> str:
    return message_text(_check(messages)[-1])


def _lines(title: str, items: Iterable[Any], fields: Sequence[str]) -> list[str]:
    out = []
    for item in list(items)[:_CONTEXT_ITEMS]:
        if isinstance(item, Mapping):
            text = " — ".join(str(item[f]) for f in fields if item.get(f) not in (None, ""))
        else:
            text = json.dumps(item, default=str)
        out.append(f"- {text[:_ITEM_CHARS]}")
    return [f"{title}:", *out] if out else []


def compass_context(user: Mapping[str, Any], memories: Iterable[Any], dashboards: Iterable[Any],
                    skills: Iterable[Any], page: Mapping[str, Any] | None) -> str:
    """The Compass daemon's system context: who the user is, what Compass remembers, where they are."""
    lines = [f"You are helping {user.get('name')} (Compass user {user.get('id')}, role {user.get('role')}) "
             "through the Compass bridge. Compass tools and local tools are available to you."]
    page = page or {}
    for name, label in (("currentPage", "Current page"), ("timezone", "Time zone")):
        if isinstance(page.get(name), str) and page[name]:
            lines.append(f"{label}: {page[name][:_ITEM_CHARS]}")
    lines += _lines("Memories", memories, ("content", "memoryType", "tags"))
    lines += _lines("Dashboards", dashboards, ("name", "description"))
    lines += _lines("Installed skills", [s for s in skills if not isinstance(s, Mapping) or s.get("enabled", True)],
                    ("name", "source"))
    return "\n".join(lines)


def split(messages: Any) -> tuple[str, list[dict[str, str]]]:
    """The newest user message's text (the request) and the earlier conversation as `{role, content}` text
    turns (any role but the assistant's counts as the user's)."""
    checked = _check(messages)
    earlier = [{"role": "assistant" if m.get("role") == "assistant" else "user", "content": message_text(m)}
               for m in checked[:-1] if message_text(m).strip()]
    request = message_text(checked[-1])
    size = len(request) + sum(len(m["content"]) for m in earlier)
    if size > MAX_PROMPT_CHARS:
        raise PromptError(f"the conversation is {size} characters, over the limit of {MAX_PROMPT_CHARS}; "
                          "start a new conversation")
    return request, earlier
