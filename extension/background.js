// compass-bridge reference extension: protocol v1 (docs/PROTOCOL.md) over native messaging.
//
// The service worker keeps one port to the native host `com.compass_bridge.host`. The host relays
// tool requests from any number of agent sessions; this file only answers them, one reply per request id.

'use strict';

// Chromium runs this file as the service worker and loads the others here; Firefox lists them all, in this
// order, in manifest.json's background.scripts (an event page has no importScripts).
if (typeof importScripts === 'function') importScripts('consent.js', 'runs.js');

const HOST_NAME = 'com.compass_bridge.host';
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;
// A connection that survived this long worked, so the next failure starts the backoff from scratch.
const HEALTHY_AFTER_MS = 5_000;
// Replies travel on to agents over the host's socket; keeping an image under 1 MiB of JSON keeps every
// hop (and the agent's context) reasonable. Base64 characters, leaving room for the envelope.
const MAX_IMAGE_CHARS = 1_000_000;
const MAX_TEXT_CHARS_DEFAULT = 200_000;

const tabIdProperty = {
  type: 'integer',
  description: 'The tab to act on (from tabs_list); the active tab of the last focused window if omitted.',
};

const CATALOG = [
  {
    name: 'tabs_list',
    scope: 'read',
    description: 'List the open tabs: id, window, title, URL, whether active, loading status.',
    inputSchema: {type: 'object', properties: {}},
  },
  {
    name: 'navigate',
    scope: 'write',
    description: 'Open a URL in a tab (or a new tab) and wait until the page has loaded.',
    inputSchema: {
      type: 'object',
      properties: {
        url: {type: 'string', description: 'The absolute URL to open, e.g. https://example.com/.'},
        tabId: tabIdProperty,
        newTab: {type: 'boolean', description: 'Open the URL in a new tab instead.', default: false},
      },
      required: ['url'],
    },
  },
  {
    name: 'get_page_text',
    scope: 'read',
    description: "Return the visible text of a tab's page (document.body.innerText), its title and URL.",
    inputSchema: {
      type: 'object',
      properties: {
        tabId: tabIdProperty,
        maxChars: {type: 'integer', minimum: 1, default: MAX_TEXT_CHARS_DEFAULT,
                   description: 'Cut the text after this many characters.'},
      },
    },
  },
  {
    name: 'screenshot',
    scope: 'read',
    description: 'Capture the visible part of a tab as a PNG (JPEG or scaled down if the PNG is over 1 MiB). ' +
      'A tab that is not the visible one of its window is brought to the front first.',
    inputSchema: {type: 'object', properties: {tabId: tabIdProperty}},
  },
  {
    name: 'click',
    scope: 'write',
    description: 'Click the first element matching a CSS selector.',
    inputSchema: {
      type: 'object',
      properties: {
        selector: {type: 'string', description: 'A CSS selector, e.g. "button[type=submit]".'},
        tabId: tabIdProperty,
      },
      required: ['selector'],
    },
  },
  {
    name: 'type_text',
    scope: 'write',
    description: 'Type text into the first input, textarea or contenteditable element matching a CSS selector.',
    inputSchema: {
      type: 'object',
      properties: {
        selector: {type: 'string', description: 'A CSS selector, e.g. "input[name=q]".'},
        text: {type: 'string'},
        clear: {type: 'boolean', description: 'Replace the current value instead of appending.', default: true},
        tabId: tabIdProperty,
      },
      required: ['selector', 'text'],
    },
  },
  {
    name: 'evaluate',
    scope: 'admin',
    description: "Evaluate a JavaScript expression in the page's own context and return its JSON value " +
      '(promises are awaited). Fails on pages whose Content-Security-Policy forbids eval.',
    inputSchema: {
      type: 'object',
      properties: {
        expression: {type: 'string', description: 'e.g. "document.title" or "fetch(\'/api\').then(r => r.status)"'},
        tabId: tabIdProperty,
      },
      required: ['expression'],
    },
  },
];

// ---- the native port ----------------------------------------------------------------------------------

let port = null;
let connectedAt = 0;
let reconnectDelay = RECONNECT_MIN_MS;
let reconnectTimer = null;
const inFlight = new Map(); // request id -> AbortController

function connect() {
  if (port !== null) return;
  clearTimeout(reconnectTimer);
  reconnectTimer = null;
  const current = chrome.runtime.connectNative(HOST_NAME);
  port = current;
  connectedAt = Date.now();
  current.onMessage.addListener((message) => onHostMessage(current, message));
  current.onDisconnect.addListener(() => {
    const why = chrome.runtime.lastError ? chrome.runtime.lastError.message : 'disconnected';
    console.warn(`compass-bridge: native host ${HOST_NAME}: ${why}`);
    Runs.hostState(false, why);
    // The host already failed these requests towards its clients; nobody is waiting for the work.
    for (const controller of inFlight.values()) controller.abort();
    inFlight.clear();
    port = null;
    if (Date.now() - connectedAt > HEALTHY_AFTER_MS) reconnectDelay = RECONNECT_MIN_MS;
    reconnectTimer = setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  });
  const manifest = chrome.runtime.getManifest();
  current.postMessage({type: 'hello', extension: {name: manifest.name, version: manifest.version}, tools: CATALOG});
}

// An open native port keeps the service worker alive, but while the host is missing nothing does, and a
// stopped worker loses its setTimeout. The alarm wakes the worker so it tries again.
chrome.alarms.create('reconnect', {periodInMinutes: 0.5});
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === 'reconnect') connect();
});
// Listening for onStartup is what makes the browser start this worker when it launches.
chrome.runtime.onStartup.addListener(connect);

function onHostMessage(from, message) {
  if (!Runs.status.host) Runs.hostState(true);
  switch (message && message.type) {
    case 'tool_request':
      runRequest(from, message);
      break;
    case 'tool_cancel': {
      const controller = inFlight.get(message.id);
      if (controller) {
        inFlight.delete(message.id);
        controller.abort();
        from.postMessage({type: 'tool_response', id: message.id,
                          error: {code: 'cancelled', message: 'cancelled by the agent'}});
      }
      break;
    }
    case 'clients':
      Runs.clients(message.clients);
      break;
    case 'error':
      Runs.hostState(false, message.message);
      break;
    default:
      if (typeof message.type === 'string' && message.type.startsWith('run_')) Runs.fromHost(message);
      // `pong` and types added in later protocol versions need no answer here.
      break;
  }
}

async function runRequest(from, {id, tool, args}) {
  const controller = new AbortController();
  inFlight.set(id, controller);
  let reply;
  let tabId;
  try {
    const handler = TOOLS[tool];
    if (!handler) throw new ToolError(`unknown tool '${tool}'; this extension offers ${Object.keys(TOOLS).join(', ')}`);
    // Consent first: the tool never reaches a tab the user did not share (consent.js).
    const checked = await Consent.authorize(tool, args || {});
    throwIfAborted(controller.signal);
    tabId = checked.tabId;
    Consent.acting(tabId, true);
    let result = await handler(checked, controller.signal);
    if (tool === 'tabs_list') result = await sharedTabsOnly(result);
    reply = {type: 'tool_response', id, result};
  } catch (err) {
    const message = controller.signal.reason === STOPPED ? STOPPED_MESSAGE : errorMessage(err);
    const code = controller.signal.reason === STOPPED ? 'stopped' : 'tool_error';
    reply = {type: 'tool_response', id, error: {code, message}};
  } finally {
    if (tabId !== undefined) Consent.acting(tabId, false);
  }
  // After a cancel (already answered) or a lost port the reply has nowhere to go.
  if (inFlight.get(id) !== controller || port !== from) return;
  inFlight.delete(id);
  from.postMessage(reply);
}

class ToolError extends Error {}

const STOPPED = 'stopped';

// The side panel's stop switch: every browser action under way ends now, answered `stopped` (consent.js keeps
// refusing new ones while the switch is on).
function stopAllBrowserActions() {
  for (const controller of inFlight.values()) controller.abort(STOPPED);
}

// tabs_list shows the agent only the tabs it may act on, and how many others there are.
async function sharedTabsOnly(result) {
  const state = await Consent.state();
  const shared = result.tabs.filter((tab) => Consent.granted(state, tab));
  const hidden = result.tabs.length - shared.length;
  return {tabs: shared, hidden, ...(hidden ? {how: `${hidden} more tab(s) are not shared with agents. ${GRANT_HOW}`} : {})};
}

function errorMessage(err) {
  if (err instanceof Error) return err.message;
  return String(err);
}

function throwIfAborted(signal) {
  if (signal.aborted) throw new ToolError('cancelled');
}

// ---- helpers -------------------------------------------------------------------------------------------

async function resolveTab(tabId) {
  if (tabId !== undefined && tabId !== null) {
    if (!Number.isInteger(tabId)) throw new ToolError(`tabId must be an integer, got ${JSON.stringify(tabId)}`);
    try {
      return await chrome.tabs.get(tabId);
    } catch {
      throw new ToolError(`no tab with id ${tabId}; call tabs_list for the open tabs`);
    }
  }
  const [focused] = await chrome.tabs.query({active: true, lastFocusedWindow: true});
  if (focused) return focused;
  const [any] = await chrome.tabs.query({active: true});
  if (any) return any;
  throw new ToolError('there is no open tab; open one with navigate and newTab: true');
}

function requireString(args, name) {
  const value = args[name];
  if (typeof value !== 'string' || value === '') throw new ToolError(`'${name}' must be a non-empty string`);
  return value;
}

// Run `func(...args)` in the tab's top frame. Injected functions return {ok, value} or {ok: false, error}
// because an exception thrown inside a page is not passed back to the extension.
async function inPage(tab, func, args, world = 'ISOLATED') {
  let results;
  try {
    results = await chrome.scripting.executeScript({target: {tabId: tab.id}, func, args, world});
  } catch (err) {
    throw new ToolError(`cannot run a script in tab ${tab.id} (${tab.url || 'no URL'}): ${errorMessage(err)}. ` +
      'Browser pages (chrome://, the Web Store, other extensions) cannot be scripted.');
  }
  const outcome = results && results[0] && results[0].result;
  if (!outcome) throw new ToolError(`the script in tab ${tab.id} returned nothing (the page may have navigated away)`);
  if (!outcome.ok) throw new ToolError(outcome.error);
  return outcome.value;
}

// Injected by inPage (so it must not use anything outside itself): find the element `sel` selects, then
// click it ('click'), or type `text` into it ('type'), replacing its content when `replace`.
function actOnElement(sel, action, text, replace) {
  let el;
  try {
    el = document.querySelector(sel);
  } catch (e) {
    return {ok: false, error: `invalid CSS selector ${JSON.stringify(sel)}: ${e.message}`};
  }
  if (!el) return {ok: false, error: `no element matches ${JSON.stringify(sel)} on ${location.href}`};
  if (action === 'click') {
    el.scrollIntoView({block: 'center'});
    el.click();
    return {ok: true, value: {tag: el.tagName.toLowerCase(), text: (el.innerText || el.value || '').slice(0, 200)}};
  }
  el.focus();
  if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
    // Set through the prototype's setter so frameworks that wrap `value` (React) see the change.
    const proto = el instanceof HTMLInputElement ? HTMLInputElement.prototype : HTMLTextAreaElement.prototype;
    const setter = Object.getOwnPropertyDescriptor(proto, 'value').set;
    setter.call(el, replace ? text : el.value + text);
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    return {ok: true, value: el.value};
  }
  if (el.isContentEditable) {
    if (replace) document.execCommand('selectAll');
    document.execCommand('insertText', false, text);
    return {ok: true, value: el.innerText};
  }
  return {ok: false, error: `${JSON.stringify(sel)} matches a <${el.tagName.toLowerCase()}>, ` +
    'which is not an input, textarea or contenteditable element'};
}

function describeTab(tab) {
  return {id: tab.id, windowId: tab.windowId, active: tab.active, title: tab.title || '', url: tab.url || '',
          status: tab.status || ''};
}

// Resolves when `tabId` reports status "complete"; rejects when the signal aborts or the tab closes.
function waitForLoad(tabId, signal) {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      chrome.tabs.onUpdated.removeListener(onUpdated);
      chrome.tabs.onRemoved.removeListener(onRemoved);
      signal.removeEventListener('abort', onAbort);
    };
    const onUpdated = (id, change, tab) => {
      if (id === tabId && change.status === 'complete') { cleanup(); resolve(tab); }
    };
    const onRemoved = (id) => {
      if (id === tabId) { cleanup(); reject(new ToolError(`tab ${tabId} was closed while loading`)); }
    };
    const onAbort = () => { cleanup(); reject(new ToolError('cancelled')); };
    chrome.tabs.onUpdated.addListener(onUpdated);
    chrome.tabs.onRemoved.addListener(onRemoved);
    signal.addEventListener('abort', onAbort);
  });
}

async function blobToBase64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = '';
  const chunk = 0x8000; // String.fromCharCode takes its arguments on the stack.
  for (let i = 0; i < bytes.length; i += chunk) binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  return btoa(binary);
}

// Re-encode a captured PNG until it fits MAX_IMAGE_CHARS: first as JPEG, then smaller JPEGs.
async function shrinkImage(dataUrl, signal) {
  const bitmap = await createImageBitmap(await (await fetch(dataUrl)).blob());
  let scale = 1;
  for (let attempt = 0; attempt < 6; attempt++) {
    throwIfAborted(signal);
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    const canvas = new OffscreenCanvas(width, height);
    canvas.getContext('2d').drawImage(bitmap, 0, 0, width, height);
    const data = await blobToBase64(await canvas.convertToBlob({type: 'image/jpeg', quality: 0.8}));
    if (data.length <= MAX_IMAGE_CHARS) return {data, mimeType: 'image/jpeg', width, height, scaled: scale < 1};
    scale *= 0.9 * Math.sqrt(MAX_IMAGE_CHARS / data.length);
  }
  throw new ToolError(`the screenshot stays over ${MAX_IMAGE_CHARS} base64 characters even scaled down; ` +
    'make the window smaller and try again');
}

// ---- the tools -----------------------------------------------------------------------------------------

const TOOLS = {
  async tabs_list() {
    const tabs = await chrome.tabs.query({});
    return {tabs: tabs.map(describeTab)};
  },

  async navigate(args, signal) {
    const url = requireString(args, 'url');
    let target;
    try {
      target = new URL(url);
    } catch {
      throw new ToolError(`'${url}' is not an absolute URL; include the scheme, e.g. https://${url}`);
    }
    const tab = args.newTab ? await chrome.tabs.create({url: 'about:blank', active: true})
                            : await resolveTab(args.tabId);
    // Listen before navigating so a fast load cannot complete unseen.
    const stop = new AbortController();
    const loaded = waitForLoad(tab.id, AbortSignal.any([signal, stop.signal]));
    try {
      await chrome.tabs.update(tab.id, {url: target.href});
    } catch (err) {
      stop.abort();
      loaded.catch(() => {});
      throw new ToolError(`cannot open ${target.href} in tab ${tab.id}: ${errorMessage(err)}`);
    }
    return describeTab(await loaded);
  },

  async get_page_text(args) {
    const tab = await resolveTab(args.tabId);
    const maxChars = Number.isInteger(args.maxChars) && args.maxChars > 0 ? args.maxChars : MAX_TEXT_CHARS_DEFAULT;
    const text = await inPage(tab, () => {
      if (!document.body) return {ok: false, error: 'the page has no body yet'};
      return {ok: true, value: document.body.innerText};
    }, []);
    const truncated = text.length > maxChars;
    return {tabId: tab.id, url: tab.url || '', title: tab.title || '', text: truncated ? text.slice(0, maxChars) : text,
            truncated};
  },

  async screenshot(args, signal) {
    let tab = await resolveTab(args.tabId);
    if (!tab.active) tab = await chrome.tabs.update(tab.id, {active: true});
    let dataUrl;
    try {
      dataUrl = await chrome.tabs.captureVisibleTab(tab.windowId, {format: 'png'});
    } catch (err) {
      throw new ToolError(`cannot capture tab ${tab.id} (${tab.url || 'no URL'}): ${errorMessage(err)}`);
    }
    throwIfAborted(signal);
    const data = dataUrl.slice(dataUrl.indexOf(',') + 1);
    const info = {tabId: tab.id, url: tab.url || ''};
    if (data.length <= MAX_IMAGE_CHARS) return {...info, data, mimeType: 'image/png', scaled: false};
    return {...info, ...(await shrinkImage(dataUrl, signal))};
  },

  async click(args) {
    const selector = requireString(args, 'selector');
    const tab = await resolveTab(args.tabId);
    const clicked = await inPage(tab, actOnElement, [selector, 'click']);
    return {tabId: tab.id, selector, ...clicked};
  },

  async type_text(args) {
    const selector = requireString(args, 'selector');
    if (typeof args.text !== 'string') throw new ToolError("'text' must be a string");
    const clear = args.clear !== false;
    const tab = await resolveTab(args.tabId);
    const value = await inPage(tab, actOnElement, [selector, 'type', args.text, clear]);
    return {tabId: tab.id, selector, value};
  },

  async evaluate(args) {
    const expression = requireString(args, 'expression');
    const tab = await resolveTab(args.tabId);
    // MAIN world: the expression sees the page's own variables, and the page's CSP decides whether eval runs.
    const value = await inPage(tab, async (source) => {
      let result;
      try {
        result = await (0, eval)(source); // eslint-disable-line no-eval
      } catch (e) {
        const blocked = e instanceof EvalError || /Content Security Policy/i.test(String(e && e.message));
        return {ok: false, error: blocked
          ? `the page's Content-Security-Policy forbids evaluating JavaScript here (${e.message})`
          : `the expression threw ${e instanceof Error ? `${e.name}: ${e.message}` : JSON.stringify(e)}`};
      }
      if (result === undefined) return {ok: true, value: null};
      try {
        return {ok: true, value: JSON.parse(JSON.stringify(result))};
      } catch (e) {
        return {ok: false, error: `the result is not JSON-serializable (${e.message}); return plain data instead`};
      }
    }, [expression], 'MAIN');
    return {tabId: tab.id, value};
  },
};

connect();
