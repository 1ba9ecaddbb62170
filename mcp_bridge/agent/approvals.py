"""Approvals: every tool call a run's engine asks about is decided here — by the envelope, or by a person.

A decision by policy is immediate. A review is shown to the run's driver (a `data-permission` chunk, or
`data-question` for AskUserQuestion, updated in place: requested → allowed / denied / withdrawn), listed for
`compass-bridge approvals`, and waits: for an answer, for the time-out (= deny), or for the engine to withdraw
it (the pending call is cancelled). Every decision is a usage-log row under the run's key.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcp_bridge.agent.engines.base import Verdict
from mcp_bridge.agent.errors import ServiceError
from mcp_bridge.agent.policy import Action, Envelope, classify, narrowed, needed_scope
from mcp_bridge.scopes import Scope, allows, format_scopes
from mcp_bridge.usage import UsageLog, UsageRecord


@dataclass(frozen=True)
class Asker:
    """The run a decision is for, and how to reach its driver."""

    run_id: str
    cwd: Path
    can_review: bool
    """False when no person can be asked (no terminal): a review is then denied at once."""
    key_id: str | None
    key_name: str
    scopes: frozenset[Scope]
    """What the run's driver holds: a tool that needs more is denied by policy, never put to a person."""
    envelopes: tuple[Envelope, ...]
    """The run's own envelopes (from its drivers), which can only narrow the configured one."""
    show: Callable[[str, str, dict[str, Any]], None]
    """(part name, part id, data): a data part in the run's current turn."""
    waiting: Callable[[bool], None]
    """The run has a pending review (True) or no longer has one (False)."""


@dataclass
class Review:
    id: str
    run_id: str
    tool_use_id: str
    action: Action
    created_at: float
    deadline: float
    future: asyncio.Future[dict[str, Any]]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "tool_use_id": self.tool_use_id, **self.action.public(),
                "created_at": self.created_at, "deadline": self.deadline}


class Approvals:
    def __init__(self, envelope: Envelope, scopes: Mapping[str, Scope], usage: UsageLog,
                 review_timeout_s: float) -> None:
        self.envelope = envelope
        self._scopes = dict(scopes)
        self._usage = usage
        self._timeout_s = review_timeout_s
        self._reviews: dict[str, Review] = {}

    async def decide(self, asker: Asker, tool: str, tool_input: Mapping[str, Any], tool_use_id: str,
                     scope: Scope | None = None) -> Verdict:
        """`scope`: what the tool needs when the engine knows it (its catalog); else it follows from the name."""
        action = classify(tool, tool_input, (asker.cwd,), self._scopes.get)
        needed = scope if scope is not None else needed_scope(tool, self._scopes.get)
        if not allows(asker.scopes, needed):
            message = (f"denied: {tool} needs the '{needed}' scope and this run's driver holds "
                       f"'{format_scopes(asker.scopes)}'; do it another way, or ask the user to start the run with "
                       f"a key that has '{needed}'")
            return self._deny(asker, action, tool_use_id, message)
        decision, why = narrowed(self.envelope, asker.envelopes, action)
        if decision == "auto_approve":
            self._log(asker, action, True, "policy", why)
            return Verdict(True)
        if decision == "deny":
            message = (f"denied by the approval envelope ({why}): {action.summary}. Do something else, or ask "
                       "the user to change [agent.approvals] in config.toml")
            return self._deny(asker, action, tool_use_id, message)
        if not asker.can_review:
            message = (f"denied: this needs a person's review ({why}) and the run's driver cannot ask one (no "
                       "terminal); run it from a terminal, or allow this category in [agent.approvals]")
            return self._deny(asker, action, tool_use_id, message)
        return await self._review(asker, action, tool_use_id, why)

    def _deny(self, asker: Asker, action: Action, tool_use_id: str, message: str) -> Verdict:
        self._show(asker, tool_use_id, action, "denied", None, message)
        self._log(asker, action, False, "policy", message)
        return Verdict(False, message)

    @staticmethod
    def _show(asker: Asker, tool_use_id: str, action: Action, state: str, review_id: str | None,
              message: str | None = None) -> None:
        data: dict[str, Any] = {**action.public(), "state": state, "toolCallId": tool_use_id}
        if review_id:
            data["approvalId"] = review_id
        if message:
            data["message"] = message
        asker.show("question" if action.category == "question" else "permission", tool_use_id, data)

    async def _review(self, asker: Asker, action: Action, tool_use_id: str, why: str) -> Verdict:
        now = time.time()
        review = Review("ap_" + secrets.token_hex(6), asker.run_id, tool_use_id, action, now, now + self._timeout_s,
                        asyncio.get_running_loop().create_future())
        self._reviews[review.id] = review
        self._show(asker, tool_use_id, action, "requested", review.id, why)
        asker.waiting(True)
        try:
            answer = await asyncio.wait_for(asyncio.shield(review.future), self._timeout_s)
        except TimeoutError:
            answer = {"decision": "deny", "by": "timeout",
                      "message": f"denied: no answer within {self._timeout_s:g} s ([agent] review_timeout_s)"}
        except asyncio.CancelledError:
            self._show(asker, tool_use_id, action, "withdrawn", review.id)
            self._log(asker, action, False, "withdrawn", "the agent withdrew the request")
            raise
        finally:
            del self._reviews[review.id]
            if not self.pending_for(asker.run_id):
                asker.waiting(False)
        by = str(answer.get("by") or "person")
        if answer["decision"] == "allow":
            updated = answer.get("updated_input")
            self._show(asker, tool_use_id, action, "allowed", review.id,
                       "allowed with edited input" if updated else None)
            self._log(asker, action, True, by, "edited input" if updated else why)
            return Verdict(True, updated_input=updated)
        message = str(answer.get("message") or "denied by the user")
        self._show(asker, tool_use_id, action, "denied", review.id, message)
        self._log(asker, action, False, by, message)
        return Verdict(False, message, stop=bool(answer.get("stop")))

    def pending(self) -> list[dict[str, Any]]:
        return [r.public() for r in self._reviews.values()]

    def pending_for(self, run_id: str) -> list[dict[str, Any]]:
        return [r.public() for r in self._reviews.values() if r.run_id == run_id]

    def answer(self, review_id: str, decision: Literal["allow", "deny"], *, message: str | None = None,
               updated_input: Mapping[str, Any] | None = None, stop: bool = False) -> Review:
        review = self._reviews.get(review_id)
        if review is None or review.future.done():
            raise ServiceError("not_found", f"no pending review {review_id} (answered, withdrawn or timed out); "
                               "see `compass-bridge approvals list`")
        if decision not in ("allow", "deny"):
            raise ServiceError("bad_request", "the decision must be allow or deny")
        if updated_input is not None and not isinstance(updated_input, Mapping):
            raise ServiceError("bad_request", "updated_input must be a JSON object")
        review.future.set_result({"decision": decision, "message": message, "stop": stop, "by": "person",
                                  "updated_input": dict(updated_input) if updated_input is not None else None})
        return review

    def _log(self, asker: Asker, action: Action, allowed: bool, by: str, why: str) -> None:
        self._usage.record(UsageRecord(
            key_id=asker.key_id, key_name=asker.key_name, tool=f"approval {action.tool}",
            outcome="ok" if allowed else "refused",
            error=f"{'allowed' if allowed else 'denied'} by {by} [{action.category}, risk {action.risk}]: {why}",
            duration_ms=0.0, client=f"agent-run:{asker.run_id}", ts=time.time()))
