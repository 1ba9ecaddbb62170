// compass-bridge reference extension: agent runs (docs/SIDE_PANEL.md, docs/PROTOCOL.md "Agent runs").
//
// Three parties meet here: the native host (run_* messages to and from the run service's link), the side panel
// (the user's own UI: starts and steers runs, answers reviews, manages sharing) and web pages on the allowlist
// (externally_connectable ports speaking Compass's bridge messages). Pages never see or answer a review: they see
// a `data-permission` part with its state, nothing to act on. Run state lives in the run service, not here, so a
// restarted service worker loses nothing: pages resume by run id and sequence number.

'use strict';

const PAGE_PORT_NAME = 'compass-bridge';
const PANEL_PORT_NAME = 'sidepanel';
const MAX_PAGE_PORTS = 32;
const MAX_PART_BYTES = 64 * 1024 * 1024; // what run_part frames may add up to: Chrome's own message limit
const MAX_PARTIAL_MESSAGES = 4;
const MAX_REQUESTS = 1024;
const PAGE_USER = {id: 'local', name: 'compass-bridge', role: 'user'};

const Runs = {
  status: {host: false, hostDetail: '', runService: null, runServiceDetail: '', service: null, compass: null,
           clients: []},
  panels: new Set(), // {port, seen: Map(runId -> last seq)}
  pages: new Set(), // {port, origin, runs: Map(runId -> last seq)}
  requests: new Map(), // rid -> {page, id} | {panel}
  parts: new Map(), // part_of -> {count, data: []}
  approvals: [],
  notified: new Set(),
  nextRid: 1,

  // ---- the native host -------------------------------------------------------------------------------

  toHost(message) {
    if (port === null) {
      connect();
      if (port === null) return 'the native host is not connected; run `compass-bridge install`, then reload the ' +
        'extension (the side panel shows what is wrong)';
    }
    port.postMessage(message);
    return null;
  },

  hostState(connected, detail) {
    this.status.host = connected;
    this.status.hostDetail = detail || '';
    if (!connected) {
      this.status.runService = null;
      this.status.clients = [];
    }
    this.toPanels({type: 'status', status: this.status});
  },

  clients(list) {
    this.status.clients = Array.isArray(list) ? list : [];
    this.toPanels({type: 'status', status: this.status});
  },

  fromHost(message) {
    switch (message.type) {
      case 'run_part': return this.part(message);
      case 'run_chunk': return this.chunk(message);
      case 'run_ack': return this.ack(message);
      case 'run_done': return this.done(message);
      case 'run_error': return this.error(message);
      case 'run_approvals': return this.setApprovals(message.approvals);
      case 'run_service':
        this.status.runService = message.connected === true;
        this.status.runServiceDetail = message.message || '';
        this.toPanels({type: 'status', status: this.status});
        if (message.connected) this.toHost({type: 'run_status', rid: this.rid({internal: true})});
        return undefined;
      case 'run_status':
        if (message.service) {
          this.status.service = message.service;
          this.status.compass = message.compass || null;
          this.status.runService = true;
          this.toPanels({type: 'status', status: this.status});
        }
        return this.reply(message);
      default:
        return this.reply(message);
    }
  },

  rid(target) {
    // An answer lost with a link that went away never comes: keep the map bounded, dropping the oldest.
    if (this.requests.size >= MAX_REQUESTS) this.requests.delete(this.requests.keys().next().value);
    const rid = `x${this.nextRid++}`;
    this.requests.set(rid, target);
    return rid;
  },

  // Answers to a panel's request go back to that panel; everything else of interest goes to every panel.
  reply(message) {
    const target = message.rid !== undefined ? this.requests.get(message.rid) : undefined;
    if (target && target.panel) target.panel.port.postMessage(message);
    else this.toPanels(message);
    if (message.rid !== undefined && message.type !== 'run_ack') this.requests.delete(message.rid);
  },

  part(message) {
    const {part_of: id, index, count, data} = message;
    let entry = this.parts.get(id);
    if (!entry) {
      // Parts of a message whose link went away never complete: keep only the few newest.
      if (this.parts.size >= MAX_PARTIAL_MESSAGES) this.parts.delete(this.parts.keys().next().value);
      entry = {count, data: [], size: 0};
      this.parts.set(id, entry);
    }
    entry.data[index] = data;
    entry.size += data.length;
    if (entry.size > MAX_PART_BYTES) {
      this.parts.delete(id);
      console.warn(`compass-bridge: dropped a run message over ${MAX_PART_BYTES} characters`);
      return;
    }
    if (entry.data.filter((d) => d !== undefined).length < entry.count) return;
    this.parts.delete(id);
    this.fromHost(JSON.parse(entry.data.join('')));
  },

  chunk(message) {
    const {run_id: runId, seq, chunk} = message;
    for (const panel of this.panels) {
      if ((panel.seen.get(runId) || 0) >= seq) continue;
      panel.seen.set(runId, seq);
      panel.port.postMessage(message);
    }
    for (const page of this.pages) {
      const last = page.runs.get(runId);
      if (last === undefined || last >= seq) continue;
      page.runs.set(runId, seq);
      page.port.postMessage({type: 'chunk', runId, chunk: forPage(chunk)});
    }
  },

  ack(message) {
    const target = this.requests.get(message.rid);
    this.requests.delete(message.rid);
    if (target && target.page) {
      if (!target.page.runs.has(message.run_id)) target.page.runs.set(message.run_id, target.after || 0);
      if (target.origin) rememberOwner(message.run_id, target.origin);
      target.page.port.postMessage({type: 'chat.ack', id: target.id, runId: message.run_id});
    } else if (target && target.panel) {
      target.panel.port.postMessage(message);
    }
    if (!(target && target.panel)) this.toPanels({...message, rid: undefined});
  },

  done(message) {
    this.toPanels(message);
    this.toHost({type: 'run_status', rid: this.rid({internal: true})}); // the panel's counts of active runs
    for (const page of this.pages) {
      if (!page.runs.has(message.run_id)) continue;
      if (message.state === 'interrupted') {
        page.port.postMessage({type: 'chat.error', runId: message.run_id, error: 'the run was interrupted ' +
          '(the run service restarted); send a follow-up to continue it'});
      } else {
        page.port.postMessage({type: 'chat.done', runId: message.run_id});
      }
    }
  },

  error(message) {
    const target = message.rid !== undefined ? this.requests.get(message.rid) : undefined;
    this.requests.delete(message.rid);
    const text = `${message.message || 'the run failed'}${message.code ? ` (${message.code})` : ''}`;
    if (target && target.page) {
      target.page.port.postMessage({type: 'chat.error', id: target.id, runId: message.run_id, error: text});
    } else if (target && target.panel) {
      target.panel.port.postMessage(message);
    } else {
      this.toPanels(message);
    }
    if (message.run_id && !target) {
      for (const page of this.pages) {
        if (page.runs.has(message.run_id)) page.port.postMessage({type: 'chat.error', runId: message.run_id,
                                                                  error: text});
      }
    }
  },

  // ---- reviews: a badge and a notification, answered only in the side panel ------------------------------

  setApprovals(approvals) {
    this.approvals = Array.isArray(approvals) ? approvals : [];
    const count = this.approvals.length;
    chrome.action.setBadgeText({text: count ? String(count) : ''}).catch(() => {});
    chrome.action.setBadgeBackgroundColor({color: '#d93025'}).catch(() => {});
    for (const approval of this.approvals) {
      if (this.notified.has(approval.id)) continue;
      this.notified.add(approval.id);
      if (chrome.notifications) {
        chrome.notifications.create(`review:${approval.id}`, {
          type: 'basic', iconUrl: chrome.runtime.getURL('icon.png'), priority: 2,
          title: `compass-bridge: review ${approval.tool || 'a tool call'}`,
          message: `${approval.summary || ''} (risk: ${approval.risk || 'unknown'}). Open the side panel to answer.`,
        }, () => void chrome.runtime.lastError);
      }
    }
    const live = new Set(this.approvals.map((a) => a.id));
    for (const id of this.notified) {
      if (live.has(id)) continue;
      this.notified.delete(id);
      if (chrome.notifications) chrome.notifications.clear(`review:${id}`, () => void chrome.runtime.lastError);
    }
    this.toPanels({type: 'run_approvals', approvals: this.approvals});
  },

  toPanels(message) {
    for (const panel of this.panels) panel.port.postMessage(message);
  },

  // ---- the side panel ------------------------------------------------------------------------------------

  async panelConnected(panelPort) {
    const panel = {port: panelPort, seen: new Map()};
    this.panels.add(panel);
    panelPort.onDisconnect.addListener(() => this.panels.delete(panel));
    panelPort.onMessage.addListener((message) => {
      this.fromPanel(panel, message).catch((err) => panelPort.postMessage(
        {type: 'panel_error', message: errorMessage(err)}));
    });
    panelPort.postMessage({type: 'status', status: this.status});
    panelPort.postMessage({type: 'run_approvals', approvals: this.approvals});
    panelPort.postMessage({type: 'consent', consent: await Consent.state()});
    if (port !== null) this.toHost({type: 'run_status', rid: this.rid({panel})});
  },

  async fromPanel(panel, message) {
    const kind = message && message.type;
    if (typeof kind === 'string' && kind.startsWith('run_')) {
      const {rid: _ignored, ...rest} = message;
      if (kind === 'run_resume') panel.seen.set(message.run_id, Number(message.after) || 0);
      const problem = this.toHost({...rest, rid: this.rid({panel})});
      if (problem) panel.port.postMessage({type: 'run_error', code: 'host_unavailable', message: problem});
      return;
    }
    if (kind === 'share_tab') await Consent.shareTab(message.tabId, Boolean(message.on));
    else if (kind === 'share_site') await Consent.shareSite(message.origin, Boolean(message.on));
    else if (kind === 'page_origin') await setPageOrigin(message.origin, Boolean(message.on));
    else if (kind === 'stop') {
      await Consent.setStopped(Boolean(message.on));
      if (message.on) stopAllBrowserActions();
    } else if (kind === 'tabs') {
      const tabs = await chrome.tabs.query({});
      panel.port.postMessage({type: 'tabs', tabs: tabs.map(describeTab)});
      return;
    } else if (kind !== 'consent') {
      throw new ToolError(`unknown side panel message ${JSON.stringify(kind)}`);
    }
    const consent = await Consent.state();
    for (const each of this.panels) each.port.postMessage({type: 'consent', consent});
  },

  // ---- web pages (externally_connectable) ----------------------------------------------------------------

  async pageConnected(pagePort) {
    const origin = pagePort.sender && pagePort.sender.origin;
    const allowed = await pageOriginAllowed(origin);
    if (pagePort.name !== PAGE_PORT_NAME || !allowed || this.pages.size >= MAX_PAGE_PORTS) {
      const why = pagePort.name !== PAGE_PORT_NAME
        ? `connect with {name: "${PAGE_PORT_NAME}"}`
        : !allowed ? `the origin ${origin} may not start runs: it is not in compass-bridge's [page_origins] ` +
          '(config.toml, then `compass-bridge install` and reload the extension), or the user blocked it in the ' +
          'side panel ("Pages that may start runs")'
          : `${MAX_PAGE_PORTS} pages are connected already; close one`;
      pagePort.postMessage({type: 'auth_error', message: why});
      pagePort.disconnect();
      return;
    }
    const page = {port: pagePort, origin, runs: new Map()};
    this.pages.add(page);
    pagePort.onDisconnect.addListener(() => this.pages.delete(page));
    pagePort.onMessage.addListener((message) => {
      this.fromPage(page, message).catch((err) => pagePort.postMessage(
        {type: 'chat.error', error: errorMessage(err)}));
    });
    pagePort.postMessage({type: 'auth_ok', user: PAGE_USER});
  },

  async fromPage(page, message) {
    const kind = message && message.type;
    if (kind === 'ping') {
      page.port.postMessage({type: 'pong'});
      return;
    }
    if (kind === 'chat.send') {
      const prompt = promptOf(message.messages);
      if (!prompt) throw new ToolError('chat.send needs `messages` ending in a user message with text');
      let problem;
      if (typeof message.runId === 'string') {
        await requireOwner(message.runId, page.origin);
        problem = this.toHost({type: 'run_send', run_id: message.runId, prompt, origin: page.origin,
                               rid: this.rid({page, id: message.id, after: page.runs.get(message.runId)})});
      } else {
        problem = this.toHost({type: 'run_start', prompt, origin: page.origin,
                               rid: this.rid({page, id: message.id, origin: page.origin})});
      }
      if (problem) page.port.postMessage({type: 'chat.error', id: message.id, error: problem});
      return;
    }
    if (kind === 'chat.abort') {
      await requireOwner(message.runId, page.origin);
      this.toHost({type: 'run_abort', run_id: message.runId});
      return;
    }
    if (kind === 'chat.resume') {
      await requireOwner(message.runId, page.origin);
      const after = Number.isInteger(message.after) && message.after >= 0 ? message.after : 0;
      page.runs.set(message.runId, after);
      this.toHost({type: 'run_resume', run_id: message.runId, after,
                   rid: this.rid({page, id: message.id, after})});
      return;
    }
    throw new ToolError(`pages send chat.send, chat.abort, chat.resume or ping, not ${JSON.stringify(kind)}; ` +
      'reviews are answered only in the compass-bridge side panel, never by a page');
  },
};

// A review reaches a page only as its state: nothing a page could use to answer it.
function forPage(chunk) {
  if (chunk && (chunk.type === 'data-permission' || chunk.type === 'data-question') && chunk.data) {
    const {state, toolCallId, tool, summary, risk} = chunk.data;
    return {...chunk, data: {state, toolCallId, tool, summary, risk}};
  }
  return chunk;
}

function promptOf(messages) {
  if (!Array.isArray(messages)) return '';
  const last = [...messages].reverse().find((m) => m && m.role === 'user');
  if (!last) return '';
  if (typeof last.content === 'string') return last.content;
  const parts = Array.isArray(last.parts) ? last.parts : [];
  return parts.filter((p) => p && p.type === 'text' && typeof p.text === 'string').map((p) => p.text).join('\n');
}

// The configured origins (policy.json, written with externally_connectable.matches from [page_origins] at
// install) are the ceiling: the browser lets no other page connect, and the run service gives no other origin's
// runs any scopes. The side panel can only narrow the list, by blocking an origin.
async function pageOriginAllowed(origin) {
  if (typeof origin !== 'string') return false;
  const state = await Consent.state();
  return state.policyPageOrigins.includes(origin) && !state.blockedPageOrigins.includes(origin);
}

async function setPageOrigin(origin, on) {
  await Consent.setListed(chrome.storage.local, 'blockedPageOrigins', requireOrigin(origin), !on);
  if (on) return;
  for (const page of [...Runs.pages]) {
    if (page.origin !== origin) continue;
    page.port.postMessage({type: 'auth_error', message: `the user blocked ${origin} in the compass-bridge side panel`});
    page.port.disconnect();
    Runs.pages.delete(page);
  }
}

// Which origin started which run: a page may abort, resume or continue only its own origin's runs. Kept in
// session storage so a restarted service worker still knows.
async function rememberOwner(runId, origin) {
  const {runOrigins} = await chrome.storage.session.get({runOrigins: {}});
  runOrigins[runId] = origin;
  await chrome.storage.session.set({runOrigins});
}

async function requireOwner(runId, origin) {
  const {runOrigins} = await chrome.storage.session.get({runOrigins: {}});
  if (typeof runId !== 'string' || runOrigins[runId] !== origin) {
    throw new ToolError(`run ${JSON.stringify(runId)} was not started by ${origin}; a page may only follow its own runs`);
  }
}

chrome.runtime.onConnectExternal.addListener((p) => { Runs.pageConnected(p); });
chrome.runtime.onConnect.addListener((p) => {
  const panelUrl = chrome.runtime.getURL('sidepanel.html');
  if (p.name === PANEL_PORT_NAME && p.sender && p.sender.id === chrome.runtime.id &&
      typeof p.sender.url === 'string' && p.sender.url.startsWith(panelUrl)) {
    Runs.panelConnected(p);
  } else {
    p.disconnect();
  }
});

if (chrome.notifications) {
  chrome.notifications.onClicked.addListener(() => { openPanel(); });
}

function openPanel() {
  if (chrome.sidePanel && chrome.sidePanel.open) {
    chrome.windows.getLastFocused().then((w) => chrome.sidePanel.open({windowId: w.id})).catch(() => {});
  } else if (typeof browser !== 'undefined' && browser.sidebarAction) {
    browser.sidebarAction.open().catch(() => {});
  }
}

if (chrome.sidePanel && chrome.sidePanel.setPanelBehavior) {
  chrome.sidePanel.setPanelBehavior({openPanelOnActionClick: true}).catch(() => {});
} else if (typeof browser !== 'undefined' && browser.sidebarAction) {
  chrome.action.onClicked.addListener(() => { browser.sidebarAction.toggle(); });
}
