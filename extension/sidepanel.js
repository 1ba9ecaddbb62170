// compass-bridge side panel (docs/SIDE_PANEL.md): status, reviews, a chat that starts and steers runs, sharing.
// It is an extension page: no web page can draw on it, read it or click in it. Everything goes through one port
// to the service worker (runs.js), which checks that the port comes from this page.

'use strict';

const port = chrome.runtime.connect({name: 'sidepanel'});
const $ = (id) => document.getElementById(id);
const view = {runId: null, state: null, parts: new Map(), status: null, consent: null, pendingRid: null};
let nextRid = 1;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'onclick') node.addEventListener('click', value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function send(message) {
  port.postMessage(message);
}

port.onMessage.addListener((message) => {
  switch (message.type) {
    case 'status': return renderStatus(message.status);
    case 'run_approvals': return renderReviews(message.approvals);
    case 'consent': view.consent = message.consent; return renderSharing();
    case 'run_ack': return onAck(message);
    case 'run_chunk': return onChunk(message);
    case 'run_done': return onState(message.run_id, message.state);
    case 'run_state': return onState(message.run_id, message.state);
    case 'run_error':
      if (message.run_id && message.run_id === view.runId) onState(message.run_id, message.state || 'failed');
      return showError(message.message);
    case 'panel_error': return showError(message.message);
    default: return undefined;
  }
});

function showError(text) {
  $('panel-error').textContent = text || '';
}

// ---- status ----------------------------------------------------------------------------------------------

function setRow(id, level, state, help) {
  const row = $(id);
  row.className = level;
  row.querySelector('.state').textContent = state;
  row.querySelector('.help').textContent = help || '';
}

function renderStatus(status) {
  view.status = status;
  if (status.host) setRow('status-host', 'ok', 'connected', '');
  else setRow('status-host', 'down', 'not connected', `${status.hostDetail || ''} Run \`compass-bridge install\`, then ` +
    'reload the extension; `compass-bridge doctor` says what is missing.');
  const service = status.service;
  if (status.runService && service) {
    const c = service.concurrency || {};
    setRow('status-service', 'ok', `running: ${c.active || 0} of ${c.max || '?'} runs active, ${c.queued || 0} queued`,
      '');
  } else if (status.runService === false) {
    setRow('status-service', 'down', 'not connected', status.runServiceDetail ||
      'It starts with the next run; if it does not, see agent-service.out in the bridge log directory.');
  } else {
    setRow('status-service', 'idle', 'not started', 'It starts with the first run (send a prompt below).');
  }
  const sessions = (status.clients || []).filter((c) => !String(c.name).includes('browser link'));
  if (sessions.length) setRow('status-sessions', 'ok', `${sessions.length} connected`, sessions.map((c) => c.name).join(', '));
  else setRow('status-sessions', 'idle', 'none', 'An MCP client running `compass-bridge serve` (Claude Code, say) ' +
    'shows here while it is connected.');
  const compass = status.compass;
  if (compass && compass.configured) setRow('status-compass', 'ok', `set up (${compass.url})`, '');
  else if (compass) setRow('status-compass', 'idle', 'not set up', compass.problem || 'Run `compass-bridge compass login`.');
  else setRow('status-compass', 'idle', 'unknown', 'Shown once the run service is connected.');
}

// ---- reviews ---------------------------------------------------------------------------------------------

function renderReviews(approvals) {
  const box = $('reviews');
  box.replaceChildren();
  $('review-count').textContent = approvals.length ? String(approvals.length) : '';
  $('no-reviews').hidden = approvals.length > 0;
  for (const a of approvals) {
    const input = el('textarea', {className: 'input', rows: 4, value: JSON.stringify(a.input ?? {}, null, 2)});
    const answer = (decision, extra = {}) => {
      send({type: 'run_answer', approval_id: a.id, decision, ...extra});
    };
    box.append(el('div', {className: 'review', dataset: {approvalId: a.id, runId: a.run_id}},
      el('div', {}, el('b', {className: 'tool'}, a.tool || '?'), ' ',
         el('span', {className: `risk risk-${a.risk}`}, `risk: ${a.risk || 'unknown'}`), ' ',
         el('span', {className: 'muted'}, a.category || '')),
      el('div', {className: 'summary'}, a.summary || ''),
      el('div', {className: 'muted'}, `run ${a.run_id}`),
      input,
      el('div', {className: 'row'},
        el('button', {className: 'allow', type: 'button', onclick: () => answer('allow')}, 'Allow'),
        el('button', {className: 'allow-edited', type: 'button', onclick: () => {
          let edited;
          try { edited = JSON.parse(input.value); } catch (err) { showError(`the edited input is not JSON: ${err.message}`); return; }
          answer('allow', {updated_input: edited});
        }}, 'Allow edited'),
        el('button', {className: 'deny', type: 'button', onclick: () => answer('deny',
          {message: 'denied by the user in the compass-bridge side panel'})}, 'Deny'))));
  }
}

// ---- chat ------------------------------------------------------------------------------------------------

function transcript() {
  return $('transcript');
}

function follow(runId) {
  if (view.runId === runId) return;
  view.runId = runId;
  view.parts.clear();
  transcript().replaceChildren();
  $('run-id').textContent = runId ? `run ${runId}` : '';
  if (runId) send({type: 'run_resume', run_id: runId, after: 0});
}

function onAck(message) {
  if (message.rid === view.pendingRid || !view.runId) {
    view.pendingRid = null;
    if (view.runId !== message.run_id) {
      view.runId = message.run_id;
      $('run-id').textContent = `run ${message.run_id}`;
    }
    onState(message.run_id, message.state || 'running');
  }
}

function onState(runId, state) {
  if (runId !== view.runId || !state) return;
  view.state = state;
  $('run-state').textContent = state;
  $('stop-run').disabled = ['done', 'failed', 'aborted', 'interrupted'].includes(state);
}

function part(key, make) {
  let node = view.parts.get(key);
  if (!node) {
    node = make();
    view.parts.set(key, node);
    transcript().append(node);
  }
  return node;
}

function onChunk({run_id: runId, chunk}) {
  if (!view.runId) { follow(runId); return; } // the replay from 0 brings this chunk too
  if (runId !== view.runId) return;
  const c = chunk;
  if (c.type === 'text-start') part(`t:${c.id}`, () => el('div', {className: 'msg-text'}));
  else if (c.type === 'text-delta') part(`t:${c.id}`, () => el('div', {className: 'msg-text'})).append(c.delta);
  else if (c.type === 'tool-input-start' || c.type === 'tool-input-available') {
    const node = part(`tool:${c.toolCallId}`, () => el('div', {className: 'msg-tool', dataset: {toolCallId: c.toolCallId}},
      el('b', {}, c.toolName || 'tool')));
    if (c.input !== undefined) node.append(el('pre', {className: 'tool-input'}, JSON.stringify(c.input, null, 2)));
  } else if (c.type === 'tool-output-available' || c.type === 'tool-output-error') {
    const node = part(`tool:${c.toolCallId}`, () => el('div', {className: 'msg-tool'}));
    const text = c.type === 'tool-output-error' ? `error: ${c.errorText}`
      : typeof c.output === 'string' ? c.output : JSON.stringify(c.output, null, 2);
    node.append(el('pre', {className: 'tool-output'}, text.length > 4000 ? `${text.slice(0, 4000)}…` : text));
  } else if (c.type === 'data-permission' || c.type === 'data-question') {
    const d = c.data || {};
    const node = part(`perm:${c.id}`, () => el('div', {className: 'msg-permission'}));
    node.textContent = `review of ${d.tool || 'a tool'}: ${d.state}${d.message ? ` (${d.message})` : ''}`;
  } else if (c.type === 'data-test-result') {
    const d = c.data || {};
    part(`test:${c.id}`, () => el('div', {className: 'msg-test'})).textContent =
      `tests (${d.runner}): ${d.passed} passed, ${d.failed} failed, ${d.skipped || 0} skipped`;
  } else if (c.type === 'error') {
    transcript().append(el('div', {className: 'msg-error'}, c.errorText));
  }
  transcript().scrollTop = transcript().scrollHeight;
}

function sendPrompt() {
  const prompt = $('prompt').value.trim();
  if (!prompt) return;
  showError('');
  $('prompt').value = '';
  transcript().append(el('div', {className: 'msg-user'}, prompt));
  view.pendingRid = `p${nextRid++}`;
  const finished = !view.runId || ['done', 'failed', 'aborted', 'interrupted'].includes(view.state);
  // A finished run takes follow-ups too (its session continues); only "New chat" starts a fresh one.
  if (view.runId && view.state !== 'aborted') send({type: 'run_send', run_id: view.runId, prompt});
  else send({type: 'run_start', prompt});
  if (finished) $('stop-run').disabled = false;
}

$('send').addEventListener('click', sendPrompt);
$('prompt').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); sendPrompt(); }
});
$('stop-run').addEventListener('click', () => { if (view.runId) send({type: 'run_abort', run_id: view.runId}); });
$('new-run').addEventListener('click', () => {
  view.runId = null; view.state = null; view.parts.clear();
  transcript().replaceChildren();
  $('run-id').textContent = ''; $('run-state').textContent = '';
});

// ---- sharing ---------------------------------------------------------------------------------------------

async function renderSharing() {
  const consent = view.consent;
  if (!consent) return;
  $('stop-switch').checked = consent.stopped;
  const tabs = await chrome.tabs.query({});
  const own = chrome.runtime.getURL('');
  $('tabs').replaceChildren(...tabs.filter((t) => !(t.url || '').startsWith(own)).map((t) => {
    let site = null;
    try { const u = new URL(t.url || ''); if (u.protocol === 'http:' || u.protocol === 'https:') site = u.origin; } catch { /* none */ }
    const tabShared = consent.tabs.includes(t.id);
    const siteShared = site !== null && (consent.sites.includes(site) || consent.policySites.includes(site));
    return el('li', {dataset: {tabId: String(t.id), site: site || ''}},
      el('span', {className: 'title', title: t.url || ''}, t.title || t.url || `tab ${t.id}`),
      (tabShared || siteShared) ? el('span', {className: 'shared'}, 'shared') : '',
      el('button', {className: 'share-tab', type: 'button', onclick: () => send({type: 'share_tab', tabId: t.id, on: !tabShared})},
        tabShared ? 'Unshare tab' : 'Share tab'),
      site ? el('button', {className: 'share-site', type: 'button', disabled: consent.policySites.includes(site),
        onclick: () => send({type: 'share_site', origin: site, on: !siteShared})}, siteShared ? 'Unshare site' : 'Share site') : '');
  }));
  $('sites').replaceChildren(...[...consent.policySites.map((s) => el('li', {}, s, el('span', {className: 'muted'}, ' (policy.json)'))),
    ...consent.sites.map((s) => el('li', {dataset: {site: s}}, s,
      el('button', {type: 'button', onclick: () => send({type: 'share_site', origin: s, on: false})}, 'Unshare')))]);
  $('page-origins').replaceChildren(...consent.policyPageOrigins.map((o) => {
    const blocked = consent.blockedPageOrigins.includes(o);
    return el('li', {dataset: {origin: o, state: blocked ? 'blocked' : 'allowed'}}, o,
      el('span', {className: 'muted'}, blocked ? ' (blocked)' : ''),
      el('button', {type: 'button', onclick: () => send({type: 'page_origin', origin: o, on: blocked})},
        blocked ? 'Allow' : 'Block'));
  }));
  $('page-origins-none').hidden = consent.policyPageOrigins.length > 0;
}

$('stop-switch').addEventListener('change', (e) => send({type: 'stop', on: e.target.checked}));
chrome.tabs.onUpdated.addListener(() => renderSharing());
chrome.tabs.onRemoved.addListener(() => renderSharing());
