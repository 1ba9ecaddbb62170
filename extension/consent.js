// compass-bridge reference extension: consent for browser tools (docs/SIDE_PANEL.md, "Consent").
//
// An agent acts only on tabs the user shared: one tab (until it closes) or one site (an origin, until revoked).
// Nothing is shared by default, for every tool that reads or drives a page; tabs_list shows only shared tabs.
// One switch stops every browser action at once. Loaded by background.js (importScripts) or, in Firefox, listed
// before it in manifest.json's background.scripts.

'use strict';

const GRANT_HOW = 'Open the compass-bridge side panel (the toolbar icon), then under "Sharing" choose ' +
  '"Share tab" or "Share site" for it.';

const Consent = {
  // What policy.json (written when the extension is built or installed) shares from the start: a way for an
  // administrator to pre-grant sites, and for the test suite to drive its loopback pages.
  policy: null,
  inFlightTabs: new Map(), // tab id -> count of tool calls acting on it now

  async loadPolicy() {
    if (this.policy !== null) return this.policy;
    try {
      const response = await fetch(chrome.runtime.getURL('policy.json'));
      const data = await response.json();
      this.policy = {
        grantedSites: Array.isArray(data.grantedSites) ? data.grantedSites.filter((s) => typeof s === 'string') : [],
        pageOrigins: Array.isArray(data.pageOrigins) ? data.pageOrigins.filter((s) => typeof s === 'string') : [],
      };
    } catch {
      this.policy = {grantedSites: [], pageOrigins: []};
    }
    return this.policy;
  },

  async state() {
    const policy = await this.loadPolicy();
    const local = await chrome.storage.local.get({sites: [], stopped: false, blockedPageOrigins: []});
    const session = await chrome.storage.session.get({tabs: []});
    return {sites: local.sites, policySites: policy.grantedSites, tabs: session.tabs, stopped: local.stopped,
            blockedPageOrigins: local.blockedPageOrigins, policyPageOrigins: policy.pageOrigins};
  },

  // Add `value` to, or remove it from, the list kept under `key` in `area` (chrome.storage.local or .session).
  async setListed(area, key, value, on) {
    const stored = await area.get({[key]: []});
    const next = stored[key].filter((v) => v !== value);
    if (on) next.push(value);
    await area.set({[key]: next});
  },

  async shareTab(tabId, on) {
    await this.setListed(chrome.storage.session, 'tabs', tabId, on);
  },

  async shareSite(origin, on) {
    await this.setListed(chrome.storage.local, 'sites', requireOrigin(origin), on);
  },

  async setStopped(stopped) {
    await chrome.storage.local.set({stopped});
  },

  // Is `tab` shared? By its id (shared tab) or by the origin of its page (shared site). A tab still loading its
  // first page has no `url` yet, only the `pendingUrl` it is committing to: judge it by that.
  granted(state, tab) {
    return state.tabs.includes(tab.id) || this.siteGranted(state, pageUrl(tab));
  },

  siteGranted(state, url) {
    const site = originOf(url);
    return site !== null && [...state.sites, ...state.policySites].some((granted) => sameSite(granted, site));
  },

  // Check a tool call before it runs; returns the args to run it with (tabId pinned to the tab checked, so the
  // tool acts on exactly that tab even if another becomes active meanwhile). Throws ToolError saying how to grant.
  async authorize(tool, args) {
    const state = await this.state();
    if (state.stopped) throw new ToolError(STOPPED_MESSAGE);
    if (tool === 'tabs_list') return args;
    // navigate refuses a malformed URL itself, before it touches any tab; that error says more than ours would.
    if (tool === 'navigate' && !URL.canParse(String(args.url))) return args;
    if (tool === 'navigate' && args.newTab) {
      if (typeof args.url === 'string' && this.siteGranted(state, args.url)) return args;
      throw new ToolError(`opening ${JSON.stringify(args.url)} in a new tab needs its site shared with agents, and ` +
        `it is not. ${GRANT_HOW}`);
    }
    const tab = await resolveTab(args.tabId);
    if (!this.granted(state, tab)) {
      throw new ToolError(`tab ${tab.id} (${pageUrl(tab) || 'no URL'}) is not shared with agents, so ${tool} may not ` +
        `act on it. ${GRANT_HOW}`);
    }
    // A tab shared by its site may only be sent to another shared site; a tab shared as a tab may go anywhere.
    if (tool === 'navigate' && !state.tabs.includes(tab.id) && !this.siteGranted(state, String(args.url || ''))) {
      throw new ToolError(`tab ${tab.id} is shared for ${originOf(pageUrl(tab))} only, and ${JSON.stringify(args.url)}` +
        ` is another site. ${GRANT_HOW}`);
    }
    return {...args, tabId: tab.id};
  },

  // The indicator: while an agent acts on a tab, that tab's toolbar icon shows "AI" and says so in its title.
  acting(tabId, on) {
    if (!Number.isInteger(tabId)) return;
    const count = (this.inFlightTabs.get(tabId) || 0) + (on ? 1 : -1);
    if (count > 0) this.inFlightTabs.set(tabId, count); else this.inFlightTabs.delete(tabId);
    const active = count > 0;
    const ignore = () => {};
    // null (not '') hands the tab back to the global badge, which counts pending reviews.
    chrome.action.setBadgeText({tabId, text: active ? 'AI' : null}).catch(ignore);
    if (active) chrome.action.setBadgeBackgroundColor({tabId, color: '#1a73e8'}).catch(ignore);
    chrome.action.setTitle({tabId, title: active ? 'compass-bridge: an agent is acting on this tab'
                                                 : 'compass-bridge'}).catch(ignore);
  },
};

const STOPPED_MESSAGE = 'the user stopped all browser actions ("Stop all browser actions" in the compass-bridge ' +
  'side panel); nothing runs in the browser until they turn it off';

// `granted` is an origin, or (in policy.json) an origin with port `*`: any port of that scheme and host.
function sameSite(granted, site) {
  if (!granted.endsWith(':*')) return granted === site;
  const url = new URL(site);
  return granted === `${url.protocol}//${url.hostname}:*`;
}

function requireOrigin(text) {
  const origin = originOf(text);
  if (origin === null) throw new ToolError(`${JSON.stringify(text)} is not a web origin like https://example.com`);
  return origin;
}

// The page a tab shows, or the one it is committing to while its first load is under way.
function pageUrl(tab) {
  return tab.url || tab.pendingUrl || '';
}

function originOf(url) {
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
    return parsed.origin;
  } catch {
    return null;
  }
}

// A tab closed is a tab no longer shared: its id could come back for another page.
chrome.tabs.onRemoved.addListener((tabId) => { Consent.shareTab(tabId, false); });
