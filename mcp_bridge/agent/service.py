"""The run service's core: runs, their engines, limits, approvals and subscribers (no I/O of its own).

Front ends reach it through `server.py` (the Unix socket) and `client.py`. A run is a session of turns:
`start` queues it (FIFO, bounded, `busy` when full or after the queue time-out), a worker takes a slot, makes
a run key with the driver's scopes and an engine, and runs turns until the run is aborted or has been idle for
the idle TTL (then the slot is freed; a later follow-up resumes the session). Every chunk is stored with a
sequence number before it is sent, so a driver that reconnects resumes from the last one it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_bridge.agent import testresults
from mcp_bridge.agent.approvals import Approvals, Asker
from mcp_bridge.agent.chunks import Chunk, ChunkMapper
from mcp_bridge.agent.engines.base import Engine, EngineError, RunHooks, TurnResult
from mcp_bridge.agent.errors import ServiceError
from mcp_bridge.agent.limits import RateLimit, Slots
from mcp_bridge.agent.policy import Envelope, EnvelopeError, builtins_beyond, parse_envelope
from mcp_bridge.agent.settings import AgentSettings
from mcp_bridge.agent.store import ACTIVE_STATES, RunStore
from mcp_bridge.config import Config
from mcp_bridge.gate import Caller, Gate
from mcp_bridge.keys import KeyStore, KeyStoreError
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, ScopeError, format_scopes, parse_scopes
from mcp_bridge.tools.failure import ToolFailure
from mcp_bridge.usage import UsageLog
from native_host.runtime_dir import UnsafeRuntimeDir, ensure_private_dir

log = logging.getLogger(__name__)

ENGINES = ("claude-code", "anthropic")
RUN_KEY_PREFIX = "agent-run-"
_LISTENER_BACKLOG = 10_000
_KILL_GRACE_S = 10.0


_MODEL = re.compile(r"[A-Za-z0-9._:@-]{1,100}")
MAX_CONTEXT_CHARS = 1_000_000
"""`system` and `messages` of a start together (a request line is at most 4 MiB)."""
_HISTORY_ROLES = ("user", "assistant")
_ENVELOPE_ROLE = "approvals"
_SYSTEM_ROLE = "system"
"""The transcript role of a run's own system prompt."""
"""The transcript role under which a run's own envelopes are kept."""


def _context(system: object, messages: object) -> tuple[str | None, list[dict[str, str]]]:
    """A start's `system` prompt and earlier conversation (`[{role: user|assistant, content: str}]`), checked."""
    if system is not None and not isinstance(system, str):
        raise ServiceError("bad_request", "`system` must be a string")
    if messages is None:
        messages = []
    if not isinstance(messages, list) or not all(
            isinstance(m, Mapping) and m.get("role") in _HISTORY_ROLES and isinstance(m.get("content"), str)
            for m in messages):
        raise ServiceError("bad_request", "`messages` (the earlier conversation) must be a list of "
                           "{\"role\": \"user\" or \"assistant\", \"content\": \"text\"}")
    history = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    size = len(system or "") + sum(len(m["content"]) for m in history)
    if size > MAX_CONTEXT_CHARS:
        raise ServiceError("bad_request", f"`system` and `messages` hold {size} characters, over the limit of "
                           f"{MAX_CONTEXT_CHARS}; send less of the earlier conversation")
    return system or None, history


def _run_envelope(raw: object) -> Envelope | None:
    """A run's own envelope from its JSON shape (None: the run has none of its own)."""
    if raw is None:
        return None
    try:
        if not isinstance(raw, Mapping):
            raise EnvelopeError("`approvals` must be an object")
        return parse_envelope(raw, "`approvals`")
    except EnvelopeError as exc:
        raise ServiceError("bad_request", f"{exc} (the run's envelope has the shape of [agent.approvals], "
                           "docs/AGENT_RUNS.md)") from None


class Listener:
    """One subscriber's queue of events; bounded, so a stalled driver cannot make the service hoard memory.
    On overflow the subscription ends with the last sequence number delivered, and the driver resumes."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_LISTENER_BACKLOG)
        self.overflowed = False

    def put(self, event: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


@dataclass
class Run:
    id: str
    engine_name: str
    cwd: Path
    caller: Caller
    can_review: bool
    state: str = "queued"
    seq: int = 0
    turn: int = 0
    session_id: str | None = None
    listeners: set[Listener] = field(default_factory=set)
    inbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    engine: Engine | None = None
    run_key: str | None = None
    """Held only in memory, only while the worker runs; revoked when it ends."""
    run_key_id: str | None = None
    run_key_name: str | None = None
    mapper: ChunkMapper | None = None
    fork: bool = False
    """The next engine starts from a copy of `session_id` (a fork), not the session itself."""
    closing: bool = False
    """The worker was asked to end its session (evicted for a queued run); a follow-up starts a new one."""
    rested_at: float = 0.0
    test_results: list[dict[str, Any]] = field(default_factory=list)
    aborted: bool = False
    envelopes: tuple[Envelope, ...] = ()
    """The run's own approval envelopes (from its drivers, at start and follow-ups): each narrows
    `[agent.approvals]` further. Kept in the transcript, so a restart cannot drop them."""
    model: str | None = None


class RunService:
    def __init__(self, paths: StatePaths, config: Config, settings: AgentSettings, keys: KeyStore, usage: UsageLog,
                 runs: RunStore, scope_of: Mapping[str, Scope], roots: PathPolicy) -> None:
        """`roots`: the roots runs may work in (`PathPolicy.named_only`: the configured ones, or none)."""
        self._paths = paths
        self._config = config
        self._roots = roots
        self.settings = settings
        self._keys = keys
        self._usage = usage
        self._store = runs
        self.approvals = Approvals(settings.approvals, scope_of, usage, settings.review_timeout_s)
        self._runs: dict[str, Run] = {}
        self._slots = Slots(settings.concurrency(), settings.max_queued, settings.queue_timeout_s, self._evict_idle)
        self._rate = RateLimit(settings.runs_per_minute)
        self._private = paths.run_dir / "agent" / "runs"
        self.connections = 0
        """Clients connected to the socket (kept by server.Connection)."""

    # -- start-up and shut-down ---------------------------------------------------------------

    def recover(self) -> list[str]:
        """After a restart: runs the last service left active are interrupted; their run keys are revoked."""
        for record in self._keys.list():
            if record.name.startswith(RUN_KEY_PREFIX) and record.state() == "active":
                self._keys.revoke(record.id)
        if self._private.exists():
            shutil.rmtree(self._private, ignore_errors=True)
        return self._store.mark_interrupted()

    async def shutdown(self) -> None:
        for run in list(self._runs.values()):
            if run.worker is not None:
                run.worker.cancel()
        workers = [r.worker for r in self._runs.values() if r.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)

    def busy(self) -> bool:
        """Whether anything would be lost, or anyone left waiting, if the service stopped now."""
        return self.connections > 0 or bool(self.approvals.pending()) or any(
            r.worker is not None for r in self._runs.values())

    def status(self) -> dict[str, Any]:
        active = sum(1 for r in self._runs.values() if r.worker is not None and r.state != "queued")
        return {"concurrency": {"active": active, "max": self._slots.size, "queued": self._slots.queued},
                "approvals": self.settings.approvals.public(), "pending_reviews": len(self.approvals.pending())}

    # -- identity and limits -------------------------------------------------------------------

    def identify(self, presented_key: str | None) -> Caller:
        verdict = Gate(self._keys, presented_key, self._config.default_scopes).identify()
        if verdict.refusal is not None:
            raise ServiceError("unauthorized", verdict.refusal)
        return verdict.caller

    def _evict_idle(self) -> None:
        """A run resting between turns holds a slot (its CLI process waits for a follow-up); a run waiting for
        a slot is worth more: close the session that has rested longest (a follow-up resumes it)."""
        idle = [r for r in self._runs.values() if r.worker is not None and not r.closing
                and r.state not in ACTIVE_STATES]
        if idle:
            oldest = min(idle, key=lambda r: r.rested_at)
            oldest.closing = True
            oldest.inbox.put_nowait("")

    def _check_cwd(self, cwd: str | None) -> Path:
        """The run's working directory: inside the configured roots (never an implied home directory) and not
        protected (mcp_bridge/protected.py), checked as a place the run will write to."""
        if not self._roots.roots:
            raise ServiceError("no_roots", self._roots.describe_roots())
        if not cwd:
            raise ServiceError("bad_request", "a run needs a working directory (cwd)")
        path = Path(cwd).expanduser()
        if not path.is_absolute() or not path.is_dir():
            raise ServiceError("bad_request", f"the working directory {cwd} is not an existing absolute directory")
        try:
            return self._roots.resolve(str(path), must_exist=True, writing=True)
        except ToolFailure as exc:
            raise ServiceError("bad_request", f"the working directory cannot be used: {exc}; add its folder to "
                               "`roots` in config.toml or pick another") from None

    def _driver(self, key: str | None, scopes: object) -> Caller:
        """Who drives this request: the key's identity, its scopes narrowed to `scopes` when given."""
        caller = self.identify(key)
        if scopes is None:
            return caller
        if isinstance(scopes, list) and all(isinstance(n, str) for n in scopes):
            names: str | list[str] = [str(n) for n in scopes]
        elif isinstance(scopes, str):
            names = scopes
        else:
            raise ServiceError("bad_request", "`scopes` must be a string such as \"read\" or a list of scopes")
        try:
            asked = parse_scopes(names)
        except ScopeError as exc:
            raise ServiceError("bad_request", f"`scopes`: {exc}") from None
        if not asked <= caller.scopes:
            raise ServiceError("forbidden", f"`scopes` may only narrow the key's: '{caller.name}' holds "
                               f"'{format_scopes(caller.scopes)}' and the request asked for '{format_scopes(asked)}'; "
                               "ask for less, or use a key that holds more")
        return caller._replace(scopes=asked)

    def _keep_envelope(self, run: Run, envelope: Envelope | None) -> None:
        if envelope is not None:
            run.envelopes = (*run.envelopes, envelope)
            shape = {k: v for k, v in envelope.public().items() if k != "configured"}
            self._store.add_transcript(run.id, _ENVELOPE_ROLE, json.dumps(shape))

    # -- runs ----------------------------------------------------------------------------------

    def start(self, *, prompt: str, cwd: str | None, engine: str | None, key: str | None,
              can_review: bool, fork_of: str | None = None, scopes: object = None, approvals: object = None,
              model: object = None, system: object = None, messages: object = None) -> Run:
        """A new run; with `fork_of`, a new run that starts from a copy of that run's Claude Code session.
        `scopes` and `approvals` (an envelope) can only narrow what the key and `[agent.approvals]` allow;
        `model` overrides `[agent] model`; `system` is added to the engine's system prompt and `messages` is the
        earlier conversation the run continues (kept in the transcript)."""
        caller = self._driver(key, scopes)
        envelope = _run_envelope(approvals)
        system_prompt, history = _context(system, messages)
        if model is not None and (not isinstance(model, str) or not _MODEL.fullmatch(model)):
            raise ServiceError("bad_request", "`model` must be a model name such as claude-sonnet-4-5 (letters, "
                               "digits, '.', '-', '_', ':', '@', at most 100 characters)")
        engine_name = engine or self.settings.engine
        session_id = None
        if fork_of is not None:
            source = self.get(fork_of)
            if source.engine_name != "claude-code" or not source.session_id:
                raise ServiceError("bad_request", f"run {fork_of} has no Claude Code session to fork; fork a "
                                   "claude-code run that has finished a turn")
            engine_name, cwd, session_id = source.engine_name, str(source.cwd), source.session_id
        if engine_name not in ENGINES:
            raise ServiceError("bad_request", f"unknown engine {engine_name!r}; use claude-code or anthropic")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ServiceError("bad_request", "the prompt is empty")
        path = self._check_cwd(cwd)
        self._check_engine(engine_name)
        self._slots.check()
        self._rate.check(caller.name)
        run = Run(id="r_" + secrets.token_hex(6), engine_name=engine_name, cwd=path, caller=caller,
                  can_review=can_review, session_id=session_id, fork=fork_of is not None, model=model)
        self._store.create(run.id, engine_name, str(path), caller.key_id, caller.name, format_scopes(caller.scopes))
        self._keep_envelope(run, envelope)
        if system_prompt:
            self._store.add_transcript(run.id, _SYSTEM_ROLE, system_prompt)
        for message in history:  # the earlier conversation, as if it had been this run's
            self._store.add_transcript(run.id, message["role"], message["content"])
        self._runs[run.id] = run
        run.worker = asyncio.create_task(self._work(run, prompt), name=f"run {run.id}")
        return run

    def _check_engine(self, engine_name: str) -> None:
        """Fail at `start`, where the driver is listening, rather than in the worker."""
        from mcp_bridge.agent.engines import anthropic, claude_code

        try:
            if engine_name == "claude-code":
                claude_code.find_claude(self.settings.claude_path)
            else:
                anthropic.load_api_key(self._paths.config_dir)
        except EngineError as exc:
            raise ServiceError("engine_unavailable", str(exc)) from None

    def get(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            record = self._store.get(run_id)
            if record is None:
                raise ServiceError("not_found", f"no run {run_id}; see `compass-bridge runs list`")
            caller = Caller(record.key_id, record.key_name, frozenset())
            kept = [e["content"] for e in self._store.transcript(run_id) if e["role"] == _ENVELOPE_ROLE]
            run = Run(id=record.id, engine_name=record.engine, cwd=Path(record.cwd), caller=caller,
                      can_review=False, state=record.state, seq=record.last_seq, turn=record.turns,
                      session_id=record.session_id, test_results=record.test_results,
                      aborted=record.state == "aborted",
                      envelopes=tuple(parse_envelope(json.loads(e), "the run's envelope") for e in kept))
            self._runs[run_id] = run
        return run

    def follow_up(self, run_id: str, prompt: str, key: str | None, can_review: bool, scopes: object = None,
                  approvals: object = None) -> Run:
        """The next turn. `scopes` narrow this turn's driver; `approvals` narrows the run's envelope further
        (it is combined with the one the run has: it can never loosen it)."""
        run = self.get(run_id)
        caller = self._driver(key, scopes)
        envelope = _run_envelope(approvals)
        if run.aborted:
            raise ServiceError("conflict", f"run {run_id} was aborted; start a new run")
        if run.state in ACTIVE_STATES:
            raise ServiceError("conflict", f"run {run_id} is {run.state}: wait for its turn to end, or interrupt "
                               "it (`compass-bridge runs abort` ends the run)")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ServiceError("bad_request", "the follow-up message is empty")
        resting = run.worker is not None and not run.closing
        if not resting:
            self._check_engine(run.engine_name)
            self._slots.check()
        self._rate.check(caller.name)
        run.caller, run.can_review = caller, can_review  # the driver of this turn holds the scopes and reviews
        self._keep_envelope(run, envelope)
        self._set_state(run, "running" if resting else "queued")
        if resting:
            run.inbox.put_nowait(prompt)
        else:
            run.worker = asyncio.create_task(self._work(run, prompt, run.worker), name=f"run {run.id}")
        return run

    async def interrupt(self, run_id: str) -> None:
        run = self.get(run_id)
        if run.engine is not None and run.state in ("running", "requires_action"):
            await run.engine.interrupt()

    async def abort(self, run_id: str) -> Run:
        run = self.get(run_id)
        if run.aborted:
            return run
        run.aborted = True
        if run.worker is None:
            self._set_state(run, "aborted")
            return run
        if run.engine is not None and run.state in ("running", "requires_action"):
            await run.engine.interrupt()
        run.inbox.put_nowait("")  # wakes an idle worker, which sees `aborted`
        if run.state == "queued":
            run.worker.cancel()
        return run

    # -- the worker ------------------------------------------------------------------------------

    async def _work(self, run: Run, prompt: str, previous: asyncio.Task[None] | None = None) -> None:
        if previous is not None:  # an evicted session still closing: let it finish first
            await asyncio.wait({previous})
        run.worker = asyncio.current_task()
        run.closing = False
        acquired = False
        private = self._private / run.id
        try:
            try:
                await self._slots.acquire()
                acquired = True
                ensure_private_dir(self._private)  # each level 0700: it will hold the run key's MCP config
                ensure_private_dir(private)
                run_key = self._make_run_key(run)
                run.engine = self._make_engine(run, run_key, private)
            except (ServiceError, EngineError, KeyStoreError, UnsafeRuntimeDir, OSError) as exc:
                self._fail_before_turn(run, prompt, str(exc))
                return
            next_prompt: str | None = prompt
            while next_prompt and not run.aborted:
                await self._turn(run, next_prompt)
                if run.aborted:
                    break
                run.rested_at = time.monotonic()
                try:
                    next_prompt = await asyncio.wait_for(run.inbox.get(), self.settings.idle_ttl_s)
                except TimeoutError:
                    run.closing = True  # from here on a follow-up starts a new worker (it waits for this one)
                    next_prompt = None
        except asyncio.CancelledError:
            if run.mapper is not None and not run.mapper.ended:
                run.mapper.abort()
            if run.state in ACTIVE_STATES:
                self._set_state(run, "aborted" if run.aborted else "interrupted",
                                None if run.aborted else "the run service is stopping")
            raise
        finally:
            if run.engine is not None:
                with contextlib.suppress(Exception):
                    await run.engine.close()
                run.engine = None
            if run.run_key_id is not None:
                self._keys.revoke(run.run_key_id)
                run.run_key = run.run_key_id = None
            shutil.rmtree(private, ignore_errors=True)
            if acquired:
                self._slots.release()
            if run.worker is asyncio.current_task():
                run.worker = None
            if run.aborted and run.state != "aborted":
                self._set_state(run, "aborted")
            self._forget_if_unused(run)

    def _make_run_key(self, run: Run) -> str:
        name = f"{RUN_KEY_PREFIX}{run.id}-{secrets.token_hex(3)}"
        record, key = self._keys.create(name, run.caller.scopes)
        run.run_key, run.run_key_id, run.run_key_name = key, record.id, record.name
        return key

    def _make_engine(self, run: Run, run_key: str, private: Path) -> Engine:
        # From the store, so a run continued after its engine closed (idle TTL, a service restart) still has its
        # system prompt and, for an engine without a session of its own, its conversation.
        transcript = self._store.transcript(run.id)
        system = next((e["content"] for e in reversed(transcript) if e["role"] == _SYSTEM_ROLE), None)
        history = [{"role": e["role"], "content": e["content"]} for e in transcript if e["role"] in _HISTORY_ROLES]
        if run.engine_name == "claude-code":
            from mcp_bridge.agent.engines.claude_code import ClaudeCodeEngine, find_claude

            return ClaudeCodeEngine(find_claude(self.settings.claude_path), private, resume=run.session_id,
                                    fork=run.fork, model=run.model, system=system,
                                    history=() if run.session_id else history,
                                    disallowed=builtins_beyond(run.caller.scopes))
        from mcp_bridge.agent.engines.anthropic import AnthropicEngine, load_api_key
        from mcp_bridge.sources import build_sources

        # The run's tools work in its directory (inside the roots, checked at start), with the same protection.
        policy = PathPolicy([run.cwd], protected=self._config.protected_paths)
        return AnthropicEngine(
            api_key=load_api_key(self._paths.config_dir), model=run.model or self.settings.model,
            max_tokens=self.settings.max_tokens, max_steps=self.settings.max_steps,
            gate=Gate(self._keys, run_key, self._config.default_scopes), usage=self._usage,
            sources=build_sources(self._paths, self._config, policy), policy=policy, system=system, history=history)

    def _new_mapper(self, run: Run, prompt: str) -> ChunkMapper:
        run.turn += 1
        self._store.update(run.id, turns=run.turn)
        self._store.add_transcript(run.id, "user", prompt)
        run.mapper = ChunkMapper(lambda chunk: self._emit(run, chunk), run.turn, f"{run.id}-{run.turn}")
        return run.mapper

    def _fail_before_turn(self, run: Run, prompt: str, message: str) -> None:
        mapper = self._new_mapper(run, prompt)
        mapper.fail(message)
        self._set_state(run, "failed", message)

    async def _turn(self, run: Run, prompt: str) -> None:
        assert run.engine is not None
        mapper = self._new_mapper(run, prompt)
        self._set_state(run, "running")
        assert run.run_key is not None
        hooks = RunHooks(run_id=run.id, cwd=run.cwd, run_key=run.run_key, mapper=mapper,
                         decide=lambda tool, tool_input, tool_use_id, scope: self.approvals.decide(
                             self._asker(run, mapper), tool, tool_input, tool_use_id, scope),
                         command_output=lambda command, output: self._tests(run, command, output))
        timed_out = False
        task = asyncio.create_task(run.engine.turn(prompt, hooks))
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.settings.run_timeout_s)
        except TimeoutError:
            timed_out = True
            result = await self._stop_turn(run, task)
        except EngineError as exc:
            result = TurnResult(error=str(exc))
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # an engine's bug must end the turn, not the worker (the run would hang)
            log.exception("run %s: the %s engine failed", run.id, run.engine_name)
            result = TurnResult(error=f"the {run.engine_name} engine failed unexpectedly ({type(exc).__name__}: "
                                f"{exc}); the run service's log has the details; a follow-up may continue")
        if result.session_id:
            run.session_id, run.fork = result.session_id, False
            self._store.update(run.id, session_id=result.session_id)
        if result.cost_usd is not None or result.usage is not None:
            self._store.update(run.id, cost_usd=result.cost_usd, usage=result.usage)
        if result.text:
            self._store.add_transcript(run.id, "assistant", result.text)
        metadata = {k: v for k, v in result.metadata.items() if v is not None}
        if timed_out:
            message = (f"run time-out: the turn ran longer than {self.settings.run_timeout_s:g} s ([agent] "
                       "run_timeout_s) and was stopped; send a follow-up to continue")
            mapper.fail(message, metadata)
            self._set_state(run, "failed", message)
        elif result.interrupted:
            mapper.abort()
            self._set_state(run, "aborted" if run.aborted else "done",
                            "aborted" if run.aborted else "the turn was interrupted")
        elif result.error:
            mapper.fail(result.error, metadata)
            self._set_state(run, "failed", result.error)
        else:
            mapper.finish(result.stop_reason, metadata)
            self._set_state(run, "done")

    async def _stop_turn(self, run: Run, task: asyncio.Task[TurnResult]) -> TurnResult:
        """Interrupt, then kill if the engine does not stop within the grace period."""
        assert run.engine is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(run.engine.interrupt(), _KILL_GRACE_S)
        done, _ = await asyncio.wait({task}, timeout=_KILL_GRACE_S)
        if not done:
            task.cancel()
            with contextlib.suppress(Exception):
                await run.engine.close()
        with contextlib.suppress(BaseException):
            return task.result()
        return TurnResult(interrupted=True)

    # -- chunks, states, subscribers -----------------------------------------------------------

    def _emit(self, run: Run, chunk: Chunk) -> None:
        run.seq += 1
        self._store.add_chunk(run.id, run.seq, chunk)
        event = {"event": "chunk", "run_id": run.id, "seq": run.seq, "chunk": chunk}
        for listener in list(run.listeners):
            listener.put(event)

    def _set_state(self, run: Run, state: str, error: str | None = None) -> None:
        run.state = state
        self._store.update(run.id, state=state, error=error)
        event = {"event": "state", "run_id": run.id, "state": state, "error": error, "seq": run.seq}
        for listener in list(run.listeners):
            listener.put(event)

    def subscribe(self, run_id: str, after: int) -> tuple[Listener, list[dict[str, Any]]]:
        """The stored chunks after `after`, then live events: registered in the same step, so none is missed."""
        run = self.get(run_id)
        replay = [{"event": "chunk", "run_id": run.id, "seq": seq, "chunk": chunk}
                  for seq, chunk in self._store.chunks(run.id, after)]
        replay.append({"event": "state", "run_id": run.id, "state": run.state, "seq": run.seq,
                       "error": None})
        listener = Listener(run.id)
        run.listeners.add(listener)
        return listener, replay

    def unsubscribe(self, listener: Listener) -> None:
        run = self._runs.get(listener.run_id)
        if run is not None:
            run.listeners.discard(listener)
            self._forget_if_unused(run)

    def _forget_if_unused(self, run: Run) -> None:
        """A run with no worker and no subscriber lives only in the store (`get` loads it again): the service's
        memory does not grow with the number of runs it has ever held."""
        if run.worker is None and not run.listeners and not self.approvals.pending_for(run.id):
            self._runs.pop(run.id, None)

    def _asker(self, run: Run, mapper: ChunkMapper) -> Asker:
        def show(name: str, part_id: str, data: dict[str, Any]) -> None:
            if not mapper.ended:
                mapper.data(name, part_id, data)

        def waiting(pending: bool) -> None:
            if pending:
                self._set_state(run, "requires_action")
            elif run.state == "requires_action":
                self._set_state(run, "running")

        return Asker(run.id, run.cwd, run.can_review, run.run_key_id, run.run_key_name or run.caller.name,
                     run.caller.scopes, run.envelopes, show, waiting)

    # -- test results ----------------------------------------------------------------------------

    def _tests(self, run: Run, command: str | None, output: str) -> None:
        found = testresults.detect(output, command)
        if found is None:
            return
        run.test_results.append(found.public())
        self._store.update(run.id, test_results=run.test_results)
        if run.mapper is not None:
            run.mapper.data("test-result", f"test-{len(run.test_results)}", found.public())

    # -- views -----------------------------------------------------------------------------------

    def list_runs(self) -> list[dict[str, Any]]:
        out = []
        for record in self._store.recent():
            item = record.public()
            live = self._runs.get(record.id)
            if live is not None:
                item["pending_reviews"] = [r["id"] for r in self.approvals.pending_for(record.id)]
            out.append(item)
        return out

    def show(self, run_id: str) -> dict[str, Any]:
        record = self._store.get(run_id)
        if record is None:
            raise ServiceError("not_found", f"no run {run_id}; see `compass-bridge runs list`")
        return {**record.public(), "transcript": self._store.transcript(run_id),
                "pending_reviews": self.approvals.pending_for(run_id)}
