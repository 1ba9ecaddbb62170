// Independent checker for AI SDK v5 UIMessageChunk streams. Usage: AI_SDK_DIR=<dir with node_modules/ai@5> node check_chunks.mjs [--lenient] FILE.jsonl|-
//
// FILE holds one chunk per line: a bare chunk {"type":"text-delta",...}, a Compass-bridge envelope
// {"type":"chunk","runId":"r1","chunk":{...}} (other envelope types are skipped), or an SSE line "data: {...}" / "data: [DONE]".
// It checks, in order:
//   1. each chunk against the AI SDK's own `uiMessageChunkSchema` (what DefaultChatTransport/useChat applies to every chunk);
//   2. the sequence, by feeding it through the AI SDK's own `readUIMessageStream` (processUIMessageStream), which throws
//      on e.g. a text-delta whose id was never started or a tool output without its tool input;
//   3. unless --lenient, ordering rules the SDK tolerates silently but a well-behaved producer keeps (start first, finish
//      last, every text/reasoning id started once and ended before finish-step/finish, tool input before tool output,
//      start-step/finish-step balanced, nothing after finish);
//   4. the assembled message with `validateUIMessages`.
// Prints {"ok":..., "errors":[...], "message": <assembled UIMessage>} and exits 0 when ok, 1 when not, 2 on bad usage.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const lenient = args.includes("--lenient");
// Several files may be given (one Node start-up for all: the tests check every turn of a run); each is one
// message. With one file the output is that file's object, with several a JSON array of them, in order.
const files = args.filter((a) => !a.startsWith("--"));
if (!files.length) {
  console.error("usage: AI_SDK_DIR=<dir with node_modules/ai> node check_chunks.mjs [--lenient] FILE.jsonl|- ...");
  process.exit(2);
}
// resolve(): AI_SDK_DIR may be relative (`AI_SDK_DIR=.cache/ai-sdk/node_modules node tests/support/check_chunks.mjs F`).
const req = createRequire(resolve(process.env.AI_SDK_DIR || process.cwd(), "noop.js"));
const ai = await import(pathToFileURL(req.resolve("ai")).href);
const aiVersion = JSON.parse(readFileSync(req.resolve("ai/package.json"), "utf8")).version;

async function check(file) {
const errors = [];
const chunks = [];
const text = readFileSync(file === "-" ? 0 : file, "utf8");
text.split("\n").forEach((raw, i) => {
  let line = raw.trim();
  if (!line || line.startsWith(":") || line.startsWith("event:")) return;
  if (line.startsWith("data:")) line = line.slice(5).trim();
  if (line === "[DONE]") return;
  let obj;
  try {
    obj = JSON.parse(line);
  } catch (e) {
    errors.push({ line: i + 1, error: `not JSON: ${e.message}` });
    return;
  }
  if (obj && obj.type === "chunk" && obj.chunk && typeof obj.chunk === "object") obj = obj.chunk;
  else if (obj && ["chat.ack", "chat.done", "chat.error", "auth_ok", "pong"].includes(obj.type)) return;
  chunks.push({ line: i + 1, chunk: obj });
});

// 1. schema
const schema = ai.uiMessageChunkSchema();
const valid = [];
for (const { line, chunk } of chunks) {
  const r = await schema.validate(chunk);
  if (r.success) {
    valid.push({ line, chunk: r.value });
    continue;
  }
  // report the issues of the union branch whose `type` matched, not all 20 branches
  const branches = r.error?.issues?.[0]?.errors ?? r.error?.cause?.issues?.[0]?.errors ?? [];
  const matched = branches.find((issues) => !issues.some((x) => x.path?.[0] === "type"));
  const detail = matched
    ? matched.map((x) => `${x.path.join(".") || "(chunk)"}: ${x.message}`).join("; ")
    : `unknown chunk type ${JSON.stringify(chunk?.type)}`;
  errors.push({ line, stage: "schema", type: chunk?.type, error: detail });
}

// 3. ordering rules (before 2 so that they are reported even when the SDK throws)
if (!lenient) {
  const open = { text: new Set(), reasoning: new Set() };
  const seenIds = { text: new Set(), reasoning: new Set() };
  const tools = new Map(); // toolCallId -> "streaming" | "available" | "done"
  let started = false, finished = false, stepOpen = false;
  const err = (line, type, error) => errors.push({ line, stage: "order", type, error });
  for (const { line, chunk } of valid) {
    const t = chunk.type;
    if (finished) err(line, t, "chunk after finish");
    if (!started && t !== "start") err(line, t, "the stream must begin with a start chunk");
    started = true;
    const kind = t.startsWith("text-") ? "text" : t.startsWith("reasoning-") ? "reasoning" : null;
    if (kind) {
      const phase = t.slice(kind.length + 1);
      if (phase === "start") {
        if (seenIds[kind].has(chunk.id)) err(line, t, `${kind} id ${chunk.id} started twice`);
        seenIds[kind].add(chunk.id);
        open[kind].add(chunk.id);
      } else if (!open[kind].has(chunk.id)) err(line, t, `${kind} id ${chunk.id} is not open (no ${kind}-start, or already ended)`);
      else if (phase === "end") open[kind].delete(chunk.id);
    }
    if (t === "start-step") {
      if (stepOpen) err(line, t, "start-step while a step is open");
      stepOpen = true;
    }
    if (t === "finish-step" || t === "finish") {
      for (const k of ["text", "reasoning"]) for (const id of open[k]) err(line, t, `${k} id ${id} still open`);
      for (const [id, st] of tools) if (st === "streaming") err(line, t, `tool call ${id} input never completed`);
      if (t === "finish-step") {
        if (!stepOpen) err(line, t, "finish-step without start-step");
        stepOpen = false;
      } else {
        if (stepOpen) err(line, t, "finish while a step is open (send finish-step first)");
        finished = true;
      }
    }
    if (t === "tool-input-start") {
      if (tools.has(chunk.toolCallId)) err(line, t, `tool call ${chunk.toolCallId} started twice`);
      tools.set(chunk.toolCallId, "streaming");
    }
    if (t === "tool-input-delta" && tools.get(chunk.toolCallId) !== "streaming")
      err(line, t, `tool call ${chunk.toolCallId} has no open tool-input-start`);
    if (t === "tool-input-available" || t === "tool-input-error") {
      if (tools.get(chunk.toolCallId) === "done" || tools.get(chunk.toolCallId) === "available")
        err(line, t, `tool call ${chunk.toolCallId} input given twice`);
      tools.set(chunk.toolCallId, t === "tool-input-error" ? "done" : "available");
    }
    if (t === "tool-output-available" || t === "tool-output-error") {
      if (tools.get(chunk.toolCallId) !== "available")
        err(line, t, `tool call ${chunk.toolCallId} has no tool-input-available before its output`);
      tools.set(chunk.toolCallId, "done");
    }
  }
  if (!finished && !valid.some((c) => c.chunk.type === "abort" || c.chunk.type === "error"))
    errors.push({ stage: "order", error: "the stream ended without a finish chunk" });
}

// 2. the AI SDK's own assembly
let message = null;
const sdkErrors = [];
const streamErrors = [];
if (!errors.some((e) => e.stage === "schema")) {
  const stream = new ReadableStream({
    start(c) {
      for (const { chunk } of valid) c.enqueue(chunk);
      c.close();
    },
  });
  try {
    for await (const m of ai.readUIMessageStream({
      stream,
      terminateOnError: false,
      onError: (e) => sdkErrors.push(String(e?.message ?? e)),
    })) message = m;
  } catch (e) {
    sdkErrors.push(String(e?.message ?? e));
  }
  // an "error" chunk is legal: the SDK hands its errorText to onError; report it, do not fail on it
  const reported = new Set(valid.filter((c) => c.chunk.type === "error").map((c) => c.chunk.errorText));
  for (const e of new Set(sdkErrors))
    if (reported.has(e)) streamErrors.push(e);
    else errors.push({ stage: "readUIMessageStream", error: e });
}

// 4. the assembled message
if (message) {
  const r = await ai.safeValidateUIMessages({ messages: [message] });
  if (!r.success) errors.push({ stage: "validateUIMessages", error: String(r.error?.message ?? r.error).slice(0, 600) });
}

return { ok: errors.length === 0, ai: aiVersion, file, chunks: chunks.length, errors, streamErrors, message };
}

const outs = [];
for (const file of files) outs.push(await check(file));
console.log(JSON.stringify(outs.length === 1 ? outs[0] : outs, null, 2));
process.exit(outs.every((o) => o.ok) ? 0 : 1);
