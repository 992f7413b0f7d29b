// Meridian's web client: plain JavaScript on the public protocol only
// (REST under /v1, the WebSocket at /v1/ws; docs/protocol.md). HLC stamps
// arrive as decimal strings and are compared as BigInt; cursors are
// opaque strings that order correctly as strings.
"use strict";

const SESSION_KEY = "meridian.session";
const PING_EVERY_MS = 20000;
const SILENT_LIMIT_MS = 45000;
const RECEIPT_BATCH = 100;

const state = {
  token: null,
  userId: null,
  deviceId: null,
  socket: null,
  ready: false,
  // The cursor the next `deliver` must continue from (`ready`, then each `through`).
  expected: null,
  nextRequest: 1,
  // Sends not yet answered by `sent`, by client_msg_id; resent on reconnect.
  pending: new Map(),
  // Request id -> client_msg_id of the send it carries.
  requests: new Map(),
  conversations: new Map(),
  open: null,
  // conv_id -> Map(msg_id or "pending:" + client_msg_id -> message).
  messages: new Map(),
  // msg_id -> { delivered: Set(user_id), read: Set(user_id) }.
  marks: new Map(),
  // msg_id -> "delivered" | "read": the receipts this device sent.
  receipted: new Map(),
  // user_id -> Promise of the display name.
  names: new Map(),
  // media_id -> Promise of the URL that shows it.
  mediaUrls: new Map(),
  backoffMs: 500,
  retryAfterMs: 0,
  lastHeard: 0,
  reconnectTimer: null,
};

const $ = (id) => document.getElementById(id);

// ---- REST ----------------------------------------------------------------

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/v1" + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    const error = new Error((json && json.message) || response.statusText);
    error.code = json && json.code;
    error.status = response.status;
    throw error;
  }
  return json;
}

// ---- Session storage and sign-in ---------------------------------------

function saveSession() {
  localStorage.setItem(SESSION_KEY, JSON.stringify({ token: state.token, userId: state.userId }));
}

function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (saved && saved.token) {
      state.token = saved.token;
      state.userId = saved.userId || null;
      return true;
    }
  } catch (_) {
    localStorage.removeItem(SESSION_KEY);
  }
  return false;
}

async function register(name) {
  const created = await api("POST", "/users", { display_name: name, device_label: "web" });
  state.token = created.token;
  state.userId = created.user_id;
  saveSession();
  start();
}

function signInWithToken(token) {
  state.token = token.trim();
  state.userId = null;
  saveSession();
  start();
}

function signOut() {
  localStorage.removeItem(SESSION_KEY);
  location.reload();
}

function start() {
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  $("sign-out").hidden = false;
  connect();
}

// ---- The WebSocket ----------------------------------------------------------

function setStatus(status) {
  const element = $("status");
  element.textContent = status;
  element.className = "status " + status;
  element.dataset.state = status;
}

function send(frame) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.socket || !state.token) return;
  setStatus("connecting");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/v1/ws");
  state.socket = socket;
  state.ready = false;
  socket.onopen = () => {
    state.lastHeard = Date.now();
    socket.send(JSON.stringify({ type: "auth", token: state.token }));
  };
  socket.onmessage = (event) => {
    state.lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    onFrame(frame);
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    state.ready = false;
    setStatus("offline");
    if (event.code === 1008 && (event.reason === "invalid_token" || event.reason === "token_revoked")) {
      showError("This device's token was refused (" + event.reason + "): sign in again.");
      return;
    }
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  if (state.reconnectTimer || !state.token) return;
  // Told how long to wait (go_away, 503), else jittered exponential backoff.
  const wait = state.retryAfterMs || state.backoffMs * (0.5 + Math.random());
  state.retryAfterMs = 0;
  state.backoffMs = Math.min(state.backoffMs * 2, 10000);
  state.reconnectTimer = setTimeout(connect, wait);
}

function dropConnection() {
  const socket = state.socket;
  if (!socket) return;
  state.socket = null;
  state.ready = false;
  setStatus("offline");
  try {
    socket.close();
  } catch (_) {
    // Closing a socket that is already gone.
  }
  scheduleReconnect();
}

setInterval(() => {
  if (!state.socket) return;
  if (Date.now() - state.lastHeard > SILENT_LIMIT_MS) {
    dropConnection();
    return;
  }
  send({ type: "ping", nonce: Date.now() });
}, PING_EVERY_MS);

window.addEventListener("offline", dropConnection);
window.addEventListener("online", () => {
  if (!state.socket) connect();
});

function onFrame(frame) {
  switch (frame.type) {
    case "ready":
      onReady(frame);
      break;
    case "deliver":
      onDeliver(frame);
      break;
    case "sent":
      onSent(frame);
      break;
    case "gap":
      onGap(frame);
      break;
    case "error":
      onError(frame);
      break;
    case "go_away":
      state.retryAfterMs = frame.retry_after_ms || 0;
      break;
    default:
      break;
  }
}

function onReady(frame) {
  state.ready = true;
  state.userId = frame.user_id;
  state.deviceId = frame.device_id;
  state.expected = frame.cursor;
  state.backoffMs = 500;
  saveSession();
  setStatus("online");
  $("my-user-id").textContent = frame.user_id;
  showWhoami();
  refreshConversations();
  // What was sent but not answered goes again, under the same
  // client_msg_id: the server returns the first result of a repeat.
  for (const pending of state.pending.values()) transmit(pending);
  // Receipts owed from before (sent while offline are not sent).
  const known = [];
  for (const conv of state.messages.values()) {
    for (const message of conv.values()) if (message.hlc) known.push(message);
  }
  sendReceipts(known);
}

function onDeliver(frame) {
  if (frame.after !== state.expected) {
    // A frame was lost on the way: never ack past it; reconnect and
    // delivery resumes from the stored cursor.
    dropConnection();
    return;
  }
  const fresh = [];
  for (const item of frame.items) {
    if (item.kind === "message") {
      if (addMessage(item.message)) fresh.push(item.message);
    } else if (item.kind === "receipt") {
      addReceipt(item);
    } else if (item.kind === "conversation_changed") {
      refreshConversations();
    }
  }
  state.expected = frame.through;
  send({ type: "ack", cursor: frame.through });
  sendReceipts(fresh);
  render();
}

function onSent(frame) {
  const clientMsgId = state.requests.get(frame.id) || frame.client_msg_id;
  state.requests.delete(frame.id);
  const pending = state.pending.get(clientMsgId);
  state.pending.delete(clientMsgId);
  if (!pending) return;
  const conv = conversationMessages(pending.conv);
  conv.delete("pending:" + clientMsgId);
  if (!conv.has(frame.msg_id)) {
    conv.set(frame.msg_id, {
      msg_id: frame.msg_id,
      conv_id: frame.conv_id,
      sender_user_id: state.userId,
      sender_device_id: state.deviceId,
      client_msg_id: clientMsgId,
      hlc: frame.hlc,
      origin_region: "",
      payload: pending.payload,
      sent_ms: frame.sent_ms,
      attachments: pending.attachmentViews || [],
    });
  }
  render();
}

function onGap(frame) {
  state.expected = frame.lost_through;
  // Acknowledged like a delivery: until then every new session is told again.
  send({ type: "ack", cursor: frame.lost_through });
  const notice = $("gap-notice");
  notice.hidden = false;
  notice.textContent =
    "Some messages expired before this device received them. Older messages below come from history.";
  if (state.open) loadHistory(state.open);
}

function onError(frame) {
  const clientMsgId = frame.id !== undefined ? state.requests.get(frame.id) : undefined;
  if (clientMsgId !== undefined) {
    state.requests.delete(frame.id);
    const pending = state.pending.get(clientMsgId);
    const transient = frame.code === "rate_limited" || frame.code === "unavailable";
    if (pending && transient) {
      setTimeout(() => transmit(pending), frame.retry_after_ms || 1000);
      return;
    }
    state.pending.delete(clientMsgId);
    if (pending) conversationMessages(pending.conv).delete("pending:" + clientMsgId);
    render();
  }
  showError(frame.code + ": " + frame.message);
}

// ---- Messages, receipts, order ---------------------------------------------

function conversationMessages(convId) {
  if (!state.messages.has(convId)) state.messages.set(convId, new Map());
  return state.messages.get(convId);
}

// Adds a message once (by msg_id); whether it was new.
function addMessage(message) {
  const conv = conversationMessages(message.conv_id);
  if (conv.has(message.msg_id)) {
    // Filled in from the `sent` answer first: keep the delivered copy.
    const known = conv.get(message.msg_id);
    if (!known.origin_region) conv.set(message.msg_id, message);
    return false;
  }
  conv.delete("pending:" + message.client_msg_id);
  conv.set(message.msg_id, message);
  if (!state.conversations.has(message.conv_id)) refreshConversations();
  return true;
}

function addReceipt(item) {
  if (!state.marks.has(item.msg_id)) state.marks.set(item.msg_id, { delivered: new Set(), read: new Set() });
  const marks = state.marks.get(item.msg_id);
  marks.delivered.add(item.from_user_id);
  if (item.receipt === "read") marks.read.add(item.from_user_id);
}

// Display order: (hlc as an integer, origin_region, msg_id); unsent last.
function displayOrder(a, b) {
  if (!a.hlc || !b.hlc) return (a.hlc ? 0 : 1) - (b.hlc ? 0 : 1);
  const ha = BigInt(a.hlc);
  const hb = BigInt(b.hlc);
  if (ha !== hb) return ha < hb ? -1 : 1;
  if (a.origin_region !== b.origin_region) return a.origin_region < b.origin_region ? -1 : 1;
  return a.msg_id < b.msg_id ? -1 : a.msg_id > b.msg_id ? 1 : 0;
}

// Delivered receipts for what reached this device from others, and read
// receipts for what the open conversation shows while the page is seen.
function sendReceipts(fresh) {
  const byConv = new Map();
  const want = (message, kind) => {
    if (message.sender_user_id === state.userId) return;
    const done = state.receipted.get(message.msg_id);
    if (done === "read" || done === kind) return;
    state.receipted.set(message.msg_id, kind);
    const key = message.conv_id + " " + kind;
    if (!byConv.has(key)) byConv.set(key, []);
    byConv.get(key).push(message.msg_id);
  };
  const seen = document.visibilityState === "visible";
  for (const message of fresh) {
    want(message, seen && message.conv_id === state.open ? "read" : "delivered");
  }
  if (seen && state.open) {
    for (const message of conversationMessages(state.open).values()) {
      if (message.hlc) want(message, "read");
    }
  }
  for (const [key, ids] of byConv) {
    const [convId, kind] = key.split(" ");
    for (let i = 0; i < ids.length; i += RECEIPT_BATCH) {
      const batch = ids.slice(i, i + RECEIPT_BATCH);
      const frame = { type: "receipt", id: state.nextRequest++, conv_id: convId, msg_ids: batch, kind };
      // Not sent (offline): owed again at the next chance.
      if (!send(frame)) for (const id of batch) state.receipted.delete(id);
    }
  }
}

document.addEventListener("visibilitychange", () => sendReceipts([]));

// ---- Sending -------------------------------------------------------------------

function newClientMsgId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function latestHlc() {
  let latest = 0n;
  for (const conv of state.messages.values()) {
    for (const message of conv.values()) {
      if (message.hlc && BigInt(message.hlc) > latest) latest = BigInt(message.hlc);
    }
  }
  return latest.toString();
}

function transmit(pending) {
  const id = state.nextRequest++;
  state.requests.set(id, pending.clientMsgId);
  const frame = {
    type: "send",
    id,
    conv_id: pending.conv,
    client_msg_id: pending.clientMsgId,
    payload: pending.payload,
    last_seen_hlc: latestHlc(),
  };
  if (pending.attachments.length) frame.attachments = pending.attachments;
  send(frame);
}

function sendMessage(convId, payload, attachments, attachmentViews) {
  const clientMsgId = newClientMsgId();
  const pending = { conv: convId, clientMsgId, payload, attachments, attachmentViews };
  state.pending.set(clientMsgId, pending);
  conversationMessages(convId).set("pending:" + clientMsgId, {
    msg_id: "pending:" + clientMsgId,
    conv_id: convId,
    sender_user_id: state.userId,
    client_msg_id: clientMsgId,
    payload,
    attachments: attachmentViews || [],
  });
  render();
  if (state.ready) transmit(pending);
}

// ---- Media ---------------------------------------------------------------------

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function uploadImage(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const slot = await api("POST", "/media", {
    size: bytes.length,
    content_type: file.type,
    sha256: await sha256Hex(bytes),
  });
  const put = await fetch(slot.upload.url, { method: slot.upload.method, headers: slot.upload.headers, body: bytes });
  if (!put.ok) throw new Error("the upload was refused by the storage (" + put.status + ")");
  let media = slot.media;
  for (let attempt = 0; attempt < 20; attempt++) {
    media = await api("POST", "/media/" + encodeURIComponent(media.media_id) + "/complete");
    if (media.state !== "checking") break;
  }
  if (media.state !== "ready") {
    throw new Error("the image was not accepted: " + (media.detail || media.reason || media.state));
  }
  return media;
}

// The URL showing `attachment` (its thumbnail where it has one), asked
// once per media; a failure is forgotten so that the next render asks again.
function attachmentUrl(message, attachment) {
  if (!state.mediaUrls.has(attachment.media_id)) {
    const path =
      "/conversations/" + encodeURIComponent(message.conv_id) +
      "/messages/" + encodeURIComponent(message.msg_id) +
      "/media/" + encodeURIComponent(attachment.media_id);
    const url = api("GET", path).then((download) => (download.thumbnail || download.download).url);
    url.catch(() => state.mediaUrls.delete(attachment.media_id));
    state.mediaUrls.set(attachment.media_id, url);
  }
  return state.mediaUrls.get(attachment.media_id);
}

function showAttachment(message, attachment, img) {
  attachmentUrl(message, attachment).then(
    (url) => {
      img.src = url;
    },
    (error) => {
      img.alt = "image unavailable: " + error.message;
    },
  );
}

// ---- Conversations -----------------------------------------------------------

// A user's display name, asked once (the id itself if it cannot be had).
function displayName(userId) {
  if (!state.names.has(userId)) {
    const name = api("GET", "/users/" + encodeURIComponent(userId)).then(
      (user) => user.display_name,
      () => {
        state.names.delete(userId);
        return userId;
      },
    );
    state.names.set(userId, name);
  }
  return state.names.get(userId);
}

async function showWhoami() {
  if (state.userId) $("whoami").textContent = await displayName(state.userId);
}

async function conversationTitle(conversation) {
  if (conversation.kind === "group") return conversation.name;
  const other = conversation.members.find((m) => m.user_id !== state.userId);
  return other ? displayName(other.user_id) : "yourself";
}

async function refreshConversations() {
  let after = "";
  const all = [];
  try {
    for (;;) {
      const page = await api("GET", "/conversations?limit=100" + (after ? "&after=" + encodeURIComponent(after) : ""));
      all.push(...page.conversations);
      if (!page.next_after) break;
      after = page.next_after;
    }
  } catch (error) {
    showError("conversations: " + error.message);
    return;
  }
  state.conversations = new Map(all.map((c) => [c.conv_id, c]));
  const list = $("conversations");
  list.textContent = "";
  for (const conversation of all) {
    const item = document.createElement("li");
    item.dataset.conv = conversation.conv_id;
    item.textContent = await conversationTitle(conversation);
    if (conversation.conv_id === state.open) item.className = "open";
    item.addEventListener("click", () => openConversation(conversation.conv_id));
    list.appendChild(item);
  }
}

async function loadHistory(convId) {
  try {
    const page = await api("GET", "/conversations/" + encodeURIComponent(convId) + "/messages?limit=100");
    for (const message of page.messages) addMessage(message);
  } catch (error) {
    showError("history: " + error.message);
  }
  render();
  sendReceipts([]);
}

async function openConversation(convId) {
  state.open = convId;
  for (const item of $("conversations").children) {
    item.className = item.dataset.conv === convId ? "open" : "";
  }
  const conversation = state.conversations.get(convId);
  $("conversation-title").textContent = conversation ? await conversationTitle(conversation) : convId;
  $("send-form").hidden = false;
  render();
  await loadHistory(convId);
}

// ---- Rendering ---------------------------------------------------------------

function markOf(message) {
  if (message.sender_user_id !== state.userId) return null;
  if (!message.hlc) return { text: "sending", read: false };
  const marks = state.marks.get(message.msg_id);
  if (marks && marks.read.size) return { text: "✓✓ read", read: true };
  if (marks && marks.delivered.size) return { text: "✓✓ delivered", read: false };
  return { text: "✓ sent", read: false };
}

function render() {
  const list = $("messages");
  if (!state.open) {
    list.textContent = "";
    return;
  }
  const messages = Array.from(conversationMessages(state.open).values()).sort(displayOrder);
  list.textContent = "";
  for (const message of messages) {
    const item = document.createElement("li");
    item.dataset.msg = message.msg_id;
    item.className = message.sender_user_id === state.userId ? "mine" : "theirs";
    const from = document.createElement("div");
    from.className = "from";
    from.textContent = message.sender_user_id;
    displayName(message.sender_user_id).then((name) => {
      from.textContent = name;
    });
    item.appendChild(from);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.payload;
    item.appendChild(text);
    const mark = markOf(message);
    if (mark) {
      const span = document.createElement("span");
      span.className = "mark" + (mark.read ? " read" : "");
      span.textContent = mark.text;
      item.appendChild(span);
    }
    for (const attachment of message.attachments || []) {
      const img = document.createElement("img");
      img.alt = attachment.content_type;
      if (message.hlc) showAttachment(message, attachment, img);
      item.appendChild(img);
    }
    list.appendChild(item);
  }
  list.scrollTop = list.scrollHeight;
}

function showError(text) {
  $("chat-error").textContent = text;
}

// ---- Wiring ------------------------------------------------------------------

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await register($("register-name").value.trim());
  } catch (error) {
    $("sign-in-error").textContent = error.message;
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signInWithToken($("token-input").value);
});

$("sign-out").addEventListener("click", signOut);

$("direct-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const conversation = await api("POST", "/conversations/direct", { peer_user_id: $("peer-input").value.trim() });
    $("peer-input").value = "";
    await refreshConversations();
    await openConversation(conversation.conv_id);
  } catch (error) {
    showError(error.message);
  }
});

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const members = $("group-members").value.split(",").map((id) => id.trim()).filter(Boolean);
  try {
    const conversation = await api("POST", "/conversations", { name: $("group-name").value.trim(), member_user_ids: members });
    await refreshConversations();
    await openConversation(conversation.conv_id);
  } catch (error) {
    showError(error.message);
  }
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!state.open) return;
  const convId = state.open;
  const input = $("message-input");
  const imageInput = $("image-input");
  const text = input.value;
  const file = imageInput.files[0];
  if (!text && !file) return;
  input.value = "";
  try {
    if (file) {
      imageInput.value = "";
      const media = await uploadImage(file);
      const view = { media_id: media.media_id, content_type: media.content_type, size: media.size, sha256: media.sha256 };
      sendMessage(convId, text, [media.media_id], [view]);
    } else {
      sendMessage(convId, text, [], []);
    }
  } catch (error) {
    showError(error.message);
  }
});

if (loadSession()) {
  start();
} else {
  $("sign-in").hidden = false;
}
