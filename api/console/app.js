// The Pulse web console: a plain ES module on Pulse's public REST API (/api/v1) and
// Socket.IO (./sio.js). No framework and no build step. User content is only ever set
// as text (never as HTML).
import { SocketClient } from "./sio.js";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const state = {
  token: localStorage.getItem("pulse.token"),
  me: null,
  socket: null,
  lastOffset: null,     // newest `offset` seen: sent on reconnect to replay what was missed
  everConnected: false,
  view: "feed",
  feedCursor: null,
  users: new Map(),     // id -> Promise<public user>
  conversations: new Map(),
  conversation: null,   // the open conversation
  messageIds: new Set(),
  olderCursor: null,
  typing: new Map(),    // user id -> timer, for the open conversation
  readBy: new Map(),    // user id -> message id, for the open conversation
  online: new Set(),
  typingSentAt: 0,
  typingStop: null,
  notificationsOpen: false,
  presenceTimer: null,
};

// --- small DOM helper ------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function when(iso) {
  const date = new Date(iso);
  return isNaN(date) ? "" : date.toLocaleString();
}

// --- errors ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, title, detail, errors, retryAfter) {
    super(detail || title);
    Object.assign(this, { status, title, detail, errors: errors || [], retryAfter });
  }
}

function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const lines = [`${err.title}${err.status ? ` (${err.status})` : ""}: ${err.detail || ""}`.trim()];
  for (const fe of err.errors) lines.push(`• ${fe.field}: ${fe.message}`);
  if (err.retryAfter) lines.push(`Try again in ${err.retryAfter} seconds.`);
  return lines.join("\n");
}

function showError(err) {
  const box = $("error");
  box.textContent = describe(err);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Runs a user action: clears the last error, shows this one's in words.
function action(fn) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    clearError();
    try {
      await fn(event);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && state.me) {
        signedOut("Your session has ended: please sign in again.");
        return;
      }
      showError(err);
    }
  };
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.textContent = ""; }, 6000);
}

// --- REST ---------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "Network error", "The server could not be reached; check the connection and try again.");
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: described below */ }
  if (!resp.ok) {
    throw new ApiError(resp.status, (data && data.title) || resp.statusText || "Error",
      (data && data.detail) || text.slice(0, 200), data && data.errors, resp.headers.get("Retry-After"));
  }
  return data;
}

function user(id) {
  if (!state.users.has(id)) {
    const promise = api("GET", `/users/${enc(id)}`).catch(() => ({ id, username: "unknown", display_name: "Unknown user" }));
    state.users.set(id, promise);
  }
  return state.users.get(id);
}

async function usernames(ids) {
  return (await Promise.all(ids.map(user))).map((u) => u.username);
}

// --- sign-up, sign-in, sign-out ------------------------------------------------------------

function showAuth(mode) {
  $("auth").hidden = false;
  $("app").hidden = true;
  $("account").hidden = true;
  $("connection").hidden = true;
  const signUp = mode === "sign-up";
  $("auth-form").dataset.mode = mode;
  $("auth-title").textContent = signUp ? "Create your Pulse account" : "Sign in to Pulse";
  $("sign-up-fields").hidden = !signUp;
  $("sign-in-fields").hidden = signUp;
  $("auth-password").autocomplete = signUp ? "new-password" : "current-password";
  $("auth-password-hint").hidden = !signUp;
  $("auth-submit").textContent = signUp ? "Sign up" : "Sign in";
  $("auth-switch-text").textContent = signUp ? "Already have an account?" : "New here?";
  $("auth-switch").textContent = signUp ? "Go to sign in" : "Go to sign up";
  (signUp ? $("su-email") : $("si-login")).focus();
}

async function signedIn(token, me) {
  state.token = token;
  state.me = me;
  localStorage.setItem("pulse.token", token);
  state.users.set(me.id, Promise.resolve(me));
  $("auth").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  $("me-username").textContent = me.username;
  connectSocket();
  await Promise.all([showView("feed"), refreshUnread(), loadConversations()]);
}

function signedOut(message) {
  if (state.socket) state.socket.close();
  state.socket = null;
  state.token = null;
  state.me = null;
  state.lastOffset = null;
  state.everConnected = false;
  state.users.clear();
  state.conversations.clear();
  state.conversation = null;
  clearInterval(state.presenceTimer);
  localStorage.removeItem("pulse.token");
  showAuth("sign-in");
  if (message) showError(new Error(message));
}

$("auth-form").addEventListener("submit", action(async () => {
  let result;
  if ($("auth-form").dataset.mode === "sign-up") {
    const body = {
      email: $("su-email").value.trim(),
      username: $("su-username").value.trim(),
      password: $("auth-password").value,
    };
    const displayName = $("su-display-name").value.trim();
    if (displayName) body.display_name = displayName;
    result = await api("POST", "/auth/register", body);
  } else {
    result = await api("POST", "/auth/login", { login: $("si-login").value.trim(), password: $("auth-password").value });
  }
  $("auth-password").value = "";
  await signedIn(result.token, result.user);
}));

$("auth-switch").addEventListener("click", () => {
  clearError();
  showAuth($("auth-form").dataset.mode === "sign-up" ? "sign-in" : "sign-up");
});
$("sign-out").addEventListener("click", action(async () => {
  try { await api("POST", "/auth/logout"); } finally { signedOut(); }
}));

// --- real time ------------------------------------------------------------------------------

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  connected: "Live",
  reconnecting: "Reconnecting…",
  refused: "Disconnected",
  closed: "Offline",
};

function connectSocket() {
  if (state.socket) state.socket.close();
  const socket = new SocketClient({
    auth: () => (state.lastOffset ? { token: state.token, offset: state.lastOffset } : { token: state.token }),
    onEvent: onSocketEvent,
    onState: (s, detail) => onSocketState(socket, s, detail),
  });
  state.socket = socket;
  socket.connect();
}

function onSocketState(socket, s, detail) {
  if (socket !== state.socket) return;
  const el = $("connection");
  el.hidden = false;
  el.dataset.state = s;
  el.textContent = CONNECTION_TEXT[s] + (s === "reconnecting" && detail ? ` (${detail})` : "");
  if (s === "connected") {
    // With an offset the server replays what was missed; without one (nothing seen
    // yet), refetch so nothing from before the connection is lost.
    if (!state.lastOffset) refreshAll();
    state.everConnected = true;
    queryPresence();
  } else if (s === "refused") {
    if (detail === "unauthorized" || detail === "disconnected by the server") {
      signedOut("Your session has ended: please sign in again.");
    }
  }
}

function onSocketEvent(name, data) {
  if (data && typeof data.offset === "string") state.lastOffset = data.offset;
  switch (name) {
    case "message:new": onMessageNew(data.message); break;
    case "message:read": onMessageRead(data); break;
    case "typing": onTyping(data); break;
    case "notification:new": onNotification(data.notification); break;
    case "resync":
      // The server cannot replay what we missed: start again from REST.
      state.lastOffset = null;
      refreshAll();
      break;
    default: break;
  }
}

async function refreshAll() {
  try {
    const tasks = [refreshUnread(), loadConversations()];
    if (state.conversation) tasks.push(openConversation(state.conversation.id, { keepScroll: true }));
    if (state.notificationsOpen) tasks.push(loadNotifications());
    if (state.view === "feed") tasks.push(loadFeed());
    await Promise.all(tasks);
  } catch (err) {
    showError(err);
  }
}

// --- views ---------------------------------------------------------------------------------

async function showView(view, arg) {
  state.view = view;
  for (const name of ["feed", "profile", "events", "chat"]) $(`view-${name}`).hidden = name !== view;
  for (const button of document.querySelectorAll(".tabs [data-view]")) {
    if (button.dataset.view === view && !(view === "profile" && arg && arg !== state.me.id)) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (view === "feed") await loadFeed();
  if (view === "profile") await loadProfile(arg || state.me.id);
  if (view === "events") await loadEvents();
  if (view === "chat") await loadConversations();
}

for (const button of document.querySelectorAll(".tabs [data-view]")) {
  button.addEventListener("click", action(() => showView(button.dataset.view)));
}

$("find-user-form").addEventListener("submit", action(async () => {
  const name = $("find-user").value.trim();
  if (name) await showView("profile", name);
}));

// --- posts and the feed --------------------------------------------------------------------

function postView(post) {
  const likeButton = h("button", { type: "button", "aria-pressed": String(post.liked_by_me) }, `Like (${post.like_count})`);
  likeButton.addEventListener("click", action(async () => {
    const liked = likeButton.getAttribute("aria-pressed") === "true";
    const result = await api(liked ? "DELETE" : "PUT", `/posts/${enc(post.id)}/like`);
    likeButton.setAttribute("aria-pressed", String(result.liked));
    likeButton.textContent = `Like (${result.like_count})`;
  }));
  const comments = h("div", { class: "comments", hidden: true });
  const commentsButton = h("button", { type: "button", "aria-expanded": "false" }, `Comments (${post.comment_count})`);
  commentsButton.addEventListener("click", action(async () => {
    const open = commentsButton.getAttribute("aria-expanded") === "true";
    commentsButton.setAttribute("aria-expanded", String(!open));
    comments.hidden = open;
    if (!open) await loadComments(post, comments, commentsButton);
  }));
  return h("article", { class: "card post", "aria-label": `Post by ${post.author.username}` },
    h("header", {},
      h("button", { type: "button", class: "link", onclick: action(() => showView("profile", post.author.id)) },
        post.author.display_name || post.author.username), ` @${post.author.username} · ${when(post.created_at)}`),
    h("p", { text: post.body }),
    likeButton, " ", commentsButton, comments);
}

async function loadComments(post, box, button) {
  const page = await api("GET", `/posts/${enc(post.id)}/comments?limit=100`);
  const inputId = `comment-${post.id}`;
  const input = h("input", { id: inputId, maxlength: "2000", required: true });
  const list = h("ul", { class: "list" }, page.items.map((c) =>
    h("li", {}, h("strong", {}, c.author.username), `: ${c.body}`, h("span", { class: "meta" }, ` · ${when(c.created_at)}`))));
  const form = h("form", { class: "inline" }, h("label", { for: inputId }, "Comment"), input,
    h("button", { type: "submit" }, "Add comment"));
  form.addEventListener("submit", action(async () => {
    if (!input.value.trim()) return;
    await api("POST", `/posts/${enc(post.id)}/comments`, { body: input.value });
    post.comment_count += 1;
    button.textContent = `Comments (${post.comment_count})`;
    await loadComments(post, box, button);
    box.querySelector("input").focus();
  }));
  box.replaceChildren(list, form);
}

async function loadFeed(more = false) {
  const cursor = more && state.feedCursor ? `&cursor=${enc(state.feedCursor)}` : "";
  const page = await api("GET", `/feed?limit=20${cursor}`);
  const views = page.items.map(postView);
  if (more) $("feed-list").append(...views);
  else $("feed-list").replaceChildren(...(views.length ? views : [h("p", { class: "muted" },
    "Nothing here yet: publish a post, or follow people (Find user) to see theirs.")]));
  state.feedCursor = page.next_cursor;
  $("feed-more").hidden = !page.next_cursor;
}

$("feed-more").addEventListener("click", action(() => loadFeed(true)));

$("post-form").addEventListener("submit", action(async () => {
  const body = $("post-body").value;
  if (!body.trim()) return;
  const post = await api("POST", "/posts", { body });
  $("post-body").value = "";
  const list = $("feed-list");
  if (list.firstElementChild && list.firstElementChild.tagName === "P") list.replaceChildren();
  list.prepend(postView(post));
  toast("Post published.");
}));

// --- profiles and following ---------------------------------------------------------------

async function iFollow(userId) {
  let cursor = "";
  for (let pages = 0; pages < 10; pages += 1) {
    const page = await api("GET", `/users/${enc(state.me.id)}/following?limit=100${cursor}`);
    if (page.items.some((u) => u.id === userId)) return true;
    if (!page.next_cursor) return false;
    cursor = `&cursor=${enc(page.next_cursor)}`;
  }
  return false;
}

async function loadProfile(idOrName) {
  const profile = await api("GET", `/users/${enc(idOrName)}`);
  state.users.set(profile.id, Promise.resolve(profile));
  const mine = profile.id === state.me.id;
  const card = $("profile-card");
  const parts = [
    h("h3", {}, profile.display_name || profile.username, h("span", { class: "muted" }, ` @${profile.username}`)),
    profile.bio ? h("p", { text: profile.bio }) : null,
    h("p", { class: "meta" }, `${profile.posts_count} posts · ${profile.followers_count} followers · ${profile.following_count} following · joined ${when(profile.created_at)}`),
  ];
  if (!mine) {
    const following = await iFollow(profile.id);
    const follow = h("button", { type: "button", "aria-pressed": String(following) }, following ? "Unfollow" : "Follow");
    follow.addEventListener("click", action(async () => {
      const now = follow.getAttribute("aria-pressed") === "true";
      await api(now ? "DELETE" : "PUT", `/users/${enc(profile.id)}/follow`);
      await loadProfile(profile.id);
    }));
    const message = h("button", { type: "button", class: "secondary" }, "Send a message");
    message.addEventListener("click", action(() => startConversation([profile.id])));
    parts.push(follow, " ", message);
  }
  card.replaceChildren(...parts);
  $("profile-title").textContent = mine ? "My profile" : `Profile of ${profile.username}`;
  const posts = await api("GET", `/users/${enc(profile.id)}/posts?limit=20`);
  $("profile-posts").replaceChildren(...(posts.items.length ? posts.items.map(postView) : [h("p", { class: "muted" }, "No posts yet.")]));
}

// --- events -----------------------------------------------------------------------------------

const RSVP_LABEL = { going: "Going", interested: "Interested", not_going: "Not going" };

function eventView(ev) {
  const attendees = h("ul", { class: "list", hidden: true });
  const attendeesButton = h("button", { type: "button", "aria-expanded": "false" }, `Attendees (${ev.going_count} going)`);
  attendeesButton.addEventListener("click", action(async () => {
    const open = attendeesButton.getAttribute("aria-expanded") === "true";
    attendeesButton.setAttribute("aria-expanded", String(!open));
    attendees.hidden = open;
    if (open) return;
    const page = await api("GET", `/events/${enc(ev.id)}/attendees?limit=100`);
    attendees.replaceChildren(...(page.items.length ? page.items.map((a) =>
      h("li", {}, `${a.user.username} — ${RSVP_LABEL[a.status] || a.status}`)) : [h("li", { class: "muted" }, "No RSVPs yet.")]));
  }));
  const rsvp = Object.entries(RSVP_LABEL).map(([status, label]) => {
    const button = h("button", { type: "button", "aria-pressed": String(ev.my_rsvp === status) }, label);
    button.addEventListener("click", action(async () => {
      await api("PUT", `/events/${enc(ev.id)}/rsvp`, { status });
      const fresh = await api("GET", `/events/${enc(ev.id)}`);
      article.replaceWith(eventView(fresh));
    }));
    return [button, " "];
  });
  const capacity = ev.capacity === null ? "unlimited places" : `${ev.capacity} places`;
  const article = h("article", { class: "card", "aria-label": `Event: ${ev.title}` },
    h("h3", { text: ev.title }),
    h("p", { class: "meta" }, `${when(ev.starts_at)}${ev.location ? ` · ${ev.location}` : ""} · hosted by ${ev.host.username} · ${ev.going_count} going, ${capacity}`),
    ev.description ? h("p", { text: ev.description }) : null,
    h("div", { role: "group", "aria-label": `RSVP to ${ev.title}` }, "RSVP: ", rsvp),
    attendeesButton, attendees);
  return article;
}

async function loadEvents(more = false) {
  const from = $("events-from").value;
  let query = "?limit=20";
  if (from) query += `&from=${enc(new Date(from).toISOString())}`;
  if (more && state.eventsCursor) query += `&cursor=${enc(state.eventsCursor)}`;
  const page = await api("GET", `/events${query}`);
  const views = page.items.map(eventView);
  if (more) $("event-list").append(...views);
  else $("event-list").replaceChildren(...(views.length ? views : [h("p", { class: "muted" }, "No upcoming events.")]));
  state.eventsCursor = page.next_cursor;
  $("events-more").hidden = !page.next_cursor;
}

$("events-from-form").addEventListener("submit", action(() => loadEvents()));
$("events-more").addEventListener("click", action(() => loadEvents(true)));

$("event-form").addEventListener("submit", action(async () => {
  const starts = $("ev-starts").value;
  const body = { title: $("ev-title").value.trim(), starts_at: starts ? new Date(starts).toISOString() : "" };
  if ($("ev-description").value.trim()) body.description = $("ev-description").value.trim();
  if ($("ev-location").value.trim()) body.location = $("ev-location").value.trim();
  if ($("ev-capacity").value) body.capacity = Number($("ev-capacity").value);
  await api("POST", "/events", body);
  $("event-form").reset();
  toast("Event created.");
  await loadEvents();
}));

// --- conversations ------------------------------------------------------------------------------

async function conversationName(conv) {
  if (conv.title) return conv.title;
  const others = conv.member_ids.filter((id) => id !== state.me.id);
  return (await usernames(others)).join(", ") || "Just you";
}

async function loadConversations() {
  const page = await api("GET", "/conversations?limit=50");
  state.conversations = new Map(page.items.map((c) => [c.id, c]));
  await renderConversations(page.items);
}

async function renderConversations(items) {
  const rows = await Promise.all(items.map(async (conv) => {
    const name = await conversationName(conv);
    const open = state.conversation && state.conversation.id === conv.id;
    const unread = open ? 0 : conv.unread_count;
    const preview = conv.last_message ? conv.last_message.body.slice(0, 60) : "No messages yet";
    const button = h("button", { type: "button", class: unread ? "unread" : "", "aria-current": open ? "true" : null },
      name, unread ? ` (${unread} unread)` : "", h("br"), h("span", { class: "meta" }, preview));
    button.addEventListener("click", action(() => openConversation(conv.id)));
    return h("li", {}, button);
  }));
  $("conversation-list").replaceChildren(...(rows.length ? rows : [h("li", { class: "muted" }, "No conversations yet.")]));
}

function sortedConversations() {
  const time = (c) => (c.last_message ? c.last_message.created_at : c.created_at);
  return [...state.conversations.values()].sort((a, b) => (time(a) < time(b) ? 1 : -1));
}

$("new-conversation").addEventListener("click", () => {
  const form = $("conversation-form");
  form.hidden = !form.hidden;
  $("new-conversation").setAttribute("aria-expanded", String(!form.hidden));
  if (!form.hidden) $("conv-members").focus();
});

$("conversation-form").addEventListener("submit", action(async () => {
  const names = $("conv-members").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (!names.length) throw new Error("Name at least one member (usernames, comma-separated).");
  const ids = [];
  for (const name of names) {
    try {
      ids.push((await api("GET", `/users/${enc(name)}`)).id);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) throw new ApiError(404, "Not Found", `No user named “${name}”.`);
      throw err;
    }
  }
  const title = $("conv-title").value.trim();
  await startConversation(ids, title || undefined);
  $("conversation-form").reset();
  $("conversation-form").hidden = true;
  $("new-conversation").setAttribute("aria-expanded", "false");
}));

async function startConversation(memberIds, title) {
  const body = { member_ids: memberIds };
  if (title) body.title = title;
  const conv = await api("POST", "/conversations", body);
  if (state.view !== "chat") await showView("chat");
  state.conversations.set(conv.id, conv);
  await renderConversations(sortedConversations());
  await openConversation(conv.id);
}

function messageView(message) {
  const mine = message.sender_id === state.me.id;
  const sender = h("strong", {}, mine ? "You" : "…");
  if (!mine) user(message.sender_id).then((u) => { sender.textContent = u.username; });
  return h("li", { class: mine ? "mine" : "", "data-id": message.id },
    sender, `: ${message.body}`, h("span", { class: "meta" }, ` · ${new Date(message.created_at).toLocaleTimeString()}`),
    h("span", { class: "receipt" }));
}

async function openConversation(id, { keepScroll = false } = {}) {
  const [conv, page] = await Promise.all([
    api("GET", `/conversations/${enc(id)}`),
    api("GET", `/conversations/${enc(id)}/messages?limit=50`),
  ]);
  if (!keepScroll || !state.conversation || state.conversation.id !== id) {
    state.readBy = new Map();
    for (const timer of state.typing.values()) clearTimeout(timer);
    state.typing = new Map();
  }
  state.conversation = conv;
  state.conversations.set(conv.id, { ...conv, unread_count: 0 });
  state.messageIds = new Set(page.items.map((m) => m.id));
  state.olderCursor = page.next_cursor;
  $("conversation").hidden = false;
  $("conversation-title").textContent = await conversationName(conv);
  $("messages").replaceChildren(...page.items.slice().reverse().map(messageView));
  $("older-messages").hidden = !page.next_cursor;
  renderReceipts();
  renderTyping();
  await renderMembers();
  scrollMessages();
  await renderConversations(sortedConversations());
  if (page.items.length) markRead(page.items[0]);
  queryPresence();
  clearInterval(state.presenceTimer);
  state.presenceTimer = setInterval(queryPresence, 15000);
  if (!keepScroll) $("message-body").focus();
}

$("older-messages").addEventListener("click", action(async () => {
  const conv = state.conversation;
  const page = await api("GET", `/conversations/${enc(conv.id)}/messages?limit=50&cursor=${enc(state.olderCursor)}`);
  const fresh = page.items.filter((m) => !state.messageIds.has(m.id));
  fresh.forEach((m) => state.messageIds.add(m.id));
  $("messages").prepend(...fresh.reverse().map(messageView));
  state.olderCursor = page.next_cursor;
  $("older-messages").hidden = !page.next_cursor;
}));

function scrollMessages() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

async function renderMembers() {
  const conv = state.conversation;
  if (!conv) return;
  const others = conv.member_ids.filter((id) => id !== state.me.id);
  const people = await Promise.all(others.map(user));
  $("conversation-members").replaceChildren(`${conv.kind === "group" ? "Group" : "Direct"} with `,
    ...people.flatMap((u, i) => [i ? ", " : "", h("span", { class: state.online.has(u.id) ? "online" : "" },
      u.username, state.online.has(u.id) ? " (online)" : "")]));
}

async function queryPresence() {
  const conv = state.conversation;
  if (!conv || !state.socket || !state.socket.connected) return;
  try {
    const ack = await state.socket.emit("presence:query", { user_ids: conv.member_ids.filter((id) => id !== state.me.id) });
    if (ack && ack.ok) {
      state.online = new Set(ack.online);
      await renderMembers();
    }
  } catch { /* disconnected meanwhile: asked again on reconnect */ }
}

function markRead(message) {
  const conv = state.conversation;
  if (!conv || message.conversation_id !== conv.id) return;
  const body = { conversation_id: conv.id, message_id: message.id };
  if (state.socket && state.socket.connected) {
    state.socket.emit("message:read", body).catch(() => {});
  } else {
    api("POST", `/conversations/${enc(conv.id)}/read`, { message_id: message.id }).catch(() => {});
  }
}

function appendMessage(message) {
  if (state.messageIds.has(message.id)) return false;
  state.messageIds.add(message.id);
  $("messages").append(messageView(message));
  scrollMessages();
  return true;
}

function onMessageNew(message) {
  const conv = state.conversations.get(message.conversation_id);
  const open = state.conversation && state.conversation.id === message.conversation_id;
  if (open) {
    if (appendMessage(message) && message.sender_id !== state.me.id) markRead(message);
    stopTyping(message.sender_id);
  }
  if (!conv) {
    loadConversations().catch(showError); // a conversation someone just started with us
    return;
  }
  conv.last_message = message;
  if (!open && message.sender_id !== state.me.id) conv.unread_count += 1;
  renderConversations(sortedConversations());
}

function onMessageRead(data) {
  if (!state.conversation || data.conversation_id !== state.conversation.id) return;
  state.readBy.set(data.user_id, data.message_id);
  renderReceipts();
}

async function renderReceipts() {
  for (const el of $("messages").querySelectorAll(".receipt")) el.textContent = "";
  const byMessage = new Map();
  for (const [userId, messageId] of state.readBy) {
    if (!byMessage.has(messageId)) byMessage.set(messageId, []);
    byMessage.get(messageId).push(userId);
  }
  for (const [messageId, userIds] of byMessage) {
    const el = $("messages").querySelector(`li[data-id="${CSS.escape(messageId)}"] .receipt`);
    if (el) el.textContent = `Seen by ${(await usernames(userIds)).join(", ")}`;
  }
}

function onTyping(data) {
  if (!state.conversation || data.conversation_id !== state.conversation.id) return;
  clearTimeout(state.typing.get(data.user_id));
  if (data.typing) {
    // A "stopped" that never comes (the other side went away) expires by itself.
    state.typing.set(data.user_id, setTimeout(() => stopTyping(data.user_id), 6000));
  } else {
    state.typing.delete(data.user_id);
  }
  renderTyping();
}

function stopTyping(userId) {
  clearTimeout(state.typing.get(userId));
  if (state.typing.delete(userId)) renderTyping();
}

async function renderTyping() {
  const names = await usernames([...state.typing.keys()]);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

function sendTyping(typing) {
  const conv = state.conversation;
  if (!conv || !state.socket || !state.socket.connected) return;
  state.socket.emit("typing", { conversation_id: conv.id, typing }).catch(() => {});
}

$("message-body").addEventListener("input", () => {
  const now = Date.now();
  if (now - state.typingSentAt > 2500) {
    state.typingSentAt = now;
    sendTyping(true);
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(() => { state.typingSentAt = 0; sendTyping(false); }, 3000);
});

$("message-form").addEventListener("submit", action(async () => {
  const conv = state.conversation;
  const body = $("message-body").value;
  if (!conv || !body.trim()) return;
  // The same client_id on a retry makes the send idempotent, socket or REST.
  const payload = { conversation_id: conv.id, body, client_id: crypto.randomUUID() };
  let message = null;
  if (state.socket && state.socket.connected) {
    try {
      const ack = await state.socket.emit("message:send", payload);
      if (!ack.ok) throw new ApiError(ack.error.status, ack.error.title, ack.error.detail, [], ack.retry_after);
      message = ack.message;
    } catch (err) {
      if (err instanceof ApiError) throw err; // the server said no: show why
      // Connection lost before the acknowledgement: send (or find) it over REST.
    }
  }
  if (!message) {
    message = await api("POST", `/conversations/${enc(conv.id)}/messages`, { body, client_id: payload.client_id });
  }
  $("message-body").value = "";
  clearTimeout(state.typingStop);
  state.typingSentAt = 0;
  sendTyping(false);
  if (state.conversation && state.conversation.id === message.conversation_id) appendMessage(message);
  const known = state.conversations.get(message.conversation_id);
  if (known) { known.last_message = message; renderConversations(sortedConversations()); }
}));

// --- notifications --------------------------------------------------------------------------------

async function refreshUnread() {
  const { count } = await api("GET", "/notifications/unread-count");
  const badge = $("unread-count");
  badge.textContent = String(count);
  if (count) delete badge.dataset.zero; else badge.dataset.zero = "";
}

function notificationView(n) {
  const item = h("li", { class: `card notification${n.read ? "" : " unread"}`, "data-id": n.id },
    h("span", { text: n.message }), h("span", { class: "meta" }, ` · ${when(n.created_at)}${n.count > 1 ? ` · ${n.count} times` : ""}`));
  if (!n.read) {
    const button = h("button", { type: "button", "aria-label": `Mark read: ${n.message}` }, "Mark read");
    button.addEventListener("click", action(async () => {
      const fresh = await api("POST", `/notifications/${enc(n.id)}/read`);
      item.replaceWith(notificationView(fresh));
      await refreshUnread();
    }));
    item.append(" ", button);
  }
  return item;
}

async function loadNotifications() {
  const page = await api("GET", "/notifications?limit=30");
  $("notification-list").replaceChildren(...(page.items.length ? page.items.map(notificationView) : [h("li", { class: "muted" }, "No notifications.")]));
}

function onNotification(n) {
  toast(n.message);
  refreshUnread().catch(showError);
  if (state.notificationsOpen) {
    const list = $("notification-list");
    const old = list.querySelector(`li[data-id="${CSS.escape(n.id)}"]`);
    if (old) old.remove();
    if (list.firstElementChild && list.firstElementChild.classList.contains("muted")) list.replaceChildren();
    list.prepend(notificationView(n));
  }
}

$("notifications-button").addEventListener("click", action(async () => {
  state.notificationsOpen = !state.notificationsOpen;
  $("notifications").hidden = !state.notificationsOpen;
  $("notifications-button").setAttribute("aria-expanded", String(state.notificationsOpen));
  if (state.notificationsOpen) await loadNotifications();
}));

$("mark-all-read").addEventListener("click", action(async () => {
  await api("POST", "/notifications/read-all");
  await Promise.all([loadNotifications(), refreshUnread()]);
}));

// --- start ----------------------------------------------------------------------------------------

async function start() {
  if (!state.token) { showAuth("sign-up"); return; }
  try {
    const me = await api("GET", "/users/me");
    await signedIn(state.token, me);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { signedOut(); return; }
    showAuth("sign-in");
    showError(err);
  }
}

start();
