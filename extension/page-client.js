// compass-bridge page client: lets a web page on the extension's allowlist run local agents through the
// compass-bridge extension, speaking the same messages as Compass's bridge WebSocket (docs/SIDE_PANEL.md, "Web
// pages"). Load it with <script src="page-client.js"> (it defines window.CompassBridge) or copy it into your
// bundle. Chromium only: Firefox has no externally_connectable.
//
//   const bridge = new CompassBridge.Client(EXTENSION_ID);
//   const user = await bridge.connect();               // auth_ok {user}, or throws with auth_error's message
//   const {runId, chunks} = await bridge.send({messages: [{role: 'user', parts: [{type: 'text', text: 'hi'}]}]});
//   for await (const chunk of chunks) console.log(chunk); // AI SDK v5 UIMessageChunks until chat.done
//
// Reviews never come to the page to answer: a `data-permission` chunk shows their state (requested, then
// allowed or denied) while the user answers in the extension's side panel.

'use strict';

(function (global) {
  const PORT_NAME = 'compass-bridge';

  class Client {
    constructor(extensionId) {
      this.extensionId = extensionId;
      this.port = null;
      this.user = null;
      this.nextId = 1;
      this.acks = new Map(); // chat.send id -> {resolve, reject}
      this.streams = new Map(); // runId -> {push, end, fail}
      this.lastSeen = new Map(); // runId -> chunks received, for resume
      this.listeners = new Set();
    }

    // Resolves with the user once the extension sends auth_ok; rejects with auth_error's message.
    connect() {
      if (!global.chrome || !chrome.runtime || !chrome.runtime.connect) {
        return Promise.reject(new Error('this page cannot reach the compass-bridge extension: it is not installed, ' +
          "or this origin is not in the extension's externally_connectable (or this is not a Chromium browser)"));
      }
      return new Promise((resolve, reject) => {
        const port = chrome.runtime.connect(this.extensionId, {name: PORT_NAME});
        this.port = port;
        let settled = false;
        port.onMessage.addListener((message) => {
          if (!settled && message.type === 'auth_ok') {
            settled = true;
            this.user = message.user;
            resolve(message.user);
          } else if (!settled && message.type === 'auth_error') {
            settled = true;
            reject(new Error(message.message));
          } else {
            this.dispatch(message);
          }
        });
        port.onDisconnect.addListener(() => {
          const why = (chrome.runtime.lastError && chrome.runtime.lastError.message) || 'the extension disconnected';
          this.port = null;
          if (!settled) { settled = true; reject(new Error(why)); }
          for (const stream of this.streams.values()) stream.fail(new Error(why));
          this.streams.clear();
        });
      });
    }

    on(listener) {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    }

    dispatch(message) {
      for (const listener of this.listeners) listener(message);
      if (message.type === 'chat.ack') {
        const waiting = this.acks.get(message.id);
        if (waiting) { this.acks.delete(message.id); waiting.resolve(message.runId); }
      } else if (message.type === 'chunk') {
        this.lastSeen.set(message.runId, (this.lastSeen.get(message.runId) || 0) + 1);
        const stream = this.streams.get(message.runId);
        if (stream) stream.push(message.chunk);
      } else if (message.type === 'chat.done') {
        const stream = this.streams.get(message.runId);
        if (stream) { this.streams.delete(message.runId); stream.end(); }
      } else if (message.type === 'chat.error') {
        const waiting = message.id !== undefined ? this.acks.get(message.id) : undefined;
        if (waiting) { this.acks.delete(message.id); waiting.reject(new Error(message.error)); }
        const stream = message.runId ? this.streams.get(message.runId) : undefined;
        if (stream) { this.streams.delete(message.runId); stream.fail(new Error(message.error)); }
      }
    }

    post(message) {
      if (!this.port) throw new Error('not connected to the compass-bridge extension; call connect() first');
      this.port.postMessage(message);
    }

    // Start a run (or continue `runId`): resolves {runId, chunks} once the extension acknowledges it.
    async send({messages, model, context, runId} = {}) {
      const id = `m${this.nextId++}`;
      const acked = new Promise((resolve, reject) => this.acks.set(id, {resolve, reject}));
      this.post({type: 'chat.send', id, messages, model, context, ...(runId ? {runId} : {})});
      const started = await acked;
      return {runId: started, chunks: this.follow(started)};
    }

    // Reattach to a run after a reload: chunks after the first `after` ones (by default all of them).
    resume(runId, after = 0) {
      const chunks = this.follow(runId);
      this.post({type: 'chat.resume', runId, after});
      return chunks;
    }

    abort(runId) {
      this.post({type: 'chat.abort', runId});
    }

    ping() {
      this.post({type: 'ping'});
    }

    // An async iterator (and a ReadableStream, see stream()) of the run's chunks until chat.done.
    follow(runId) {
      const queue = [];
      let wake = null;
      let finished = false;
      let failure = null;
      const settle = () => { if (wake) { const w = wake; wake = null; w(); } };
      this.streams.set(runId, {
        push: (chunk) => { queue.push(chunk); settle(); },
        end: () => { finished = true; settle(); },
        fail: (err) => { failure = err; settle(); },
      });
      return {
        async *[Symbol.asyncIterator]() {
          for (;;) {
            if (queue.length) { yield queue.shift(); continue; }
            if (failure) throw failure;
            if (finished) return;
            await new Promise((resolve) => { wake = resolve; });
          }
        },
      };
    }
  }

  // An AI SDK v5 ChatTransport over the extension, for useChat({transport: new CompassBridge.ChatTransport(id)}).
  class ChatTransport {
    constructor(extensionId) {
      this.client = new Client(extensionId);
      this.ready = null;
      this.runs = new Map(); // chatId -> runId
    }

    async sendMessages({chatId, messages, abortSignal}) {
      this.ready = this.ready || this.client.connect();
      await this.ready;
      const previous = this.runs.get(chatId);
      const {runId, chunks} = await this.client.send({messages, runId: previous, context: {conversationId: chatId}});
      this.runs.set(chatId, runId);
      if (abortSignal) abortSignal.addEventListener('abort', () => this.client.abort(runId), {once: true});
      return toStream(chunks);
    }

    async reconnectToStream({chatId}) {
      const runId = this.runs.get(chatId);
      if (!runId) return null;
      this.ready = this.ready || this.client.connect();
      await this.ready;
      return toStream(this.client.resume(runId, 0));
    }
  }

  function toStream(chunks) {
    const iterator = chunks[Symbol.asyncIterator]();
    return new ReadableStream({
      async pull(controller) {
        try {
          const {value, done} = await iterator.next();
          if (done) controller.close(); else controller.enqueue(value);
        } catch (err) {
          controller.error(err);
        }
      },
    });
  }

  global.CompassBridge = {Client, ChatTransport};
})(typeof window !== 'undefined' ? window : globalThis);
