// A small Socket.IO client: Socket.IO v5 over Engine.IO v4, WebSocket transport only,
// default namespace. Enough for Pulse: connect with `auth`, events, acknowledgements,
// answering the server's pings, and reconnecting by itself (with a fresh `auth` each
// time, so the caller can pass its last `offset`).
//
// Engine.IO packets are text frames whose first character is the type: 0 open, 1 close,
// 2 ping, 3 pong, 4 message. A message carries a Socket.IO packet: 0 CONNECT,
// 1 DISCONNECT, 2 EVENT, 3 ACK, 4 CONNECT_ERROR, then an optional ack id, then JSON.

const EIO_OPEN = "0", EIO_CLOSE = "1", EIO_PING = "2", EIO_PONG = "3", EIO_MESSAGE = "4";
const SIO_CONNECT = "0", SIO_DISCONNECT = "1", SIO_EVENT = "2", SIO_ACK = "3", SIO_CONNECT_ERROR = "4";

export class SocketClient {
  // options: url (page-relative or absolute http(s) URL of the server), path ("/socket.io"),
  // auth() -> the CONNECT data, ackTimeoutMs, and callbacks:
  // onEvent(name, data), onState(state, detail) with state one of
  // "connecting", "connected", "reconnecting", "refused", "closed".
  constructor(options) {
    this.options = { path: "/socket.io", ackTimeoutMs: 10000, ...options };
    this.ws = null;
    this.state = "closed";
    this.nextAckId = 0;
    this.pending = new Map(); // ack id -> {resolve, reject, timer}
    this.attempts = 0;
    this.stopped = true;
    this.pingTimer = null;
    this.retryTimer = null;
  }

  get connected() { return this.state === "connected"; }

  connect() {
    this.stopped = false;
    this.attempts = 0;
    this._open();
  }

  // Closes for good (sign-out): no reconnection.
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this._teardown();
    this._setState("closed");
  }

  // Emits an event and resolves with the acknowledgement's first argument.
  emit(event, data) {
    return new Promise((resolve, reject) => {
      if (!this.connected) { reject(new Error("not connected")); return; }
      const id = this.nextAckId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("no acknowledgement from the server"));
      }, this.options.ackTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this._send(EIO_MESSAGE + SIO_EVENT + id + JSON.stringify([event, data]));
    });
  }

  _url() {
    const base = new URL(this.options.url || "/", window.location.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    base.pathname = this.options.path.replace(/\/$/, "") + "/";
    base.search = "?EIO=4&transport=websocket";
    return base.toString();
  }

  _open() {
    this._teardown();
    this._setState(this.attempts === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this._url());
    } catch (err) {
      this._scheduleReconnect(String(err));
      return;
    }
    this.ws = ws;
    ws.onmessage = (msg) => { if (this.ws === ws && typeof msg.data === "string") this._onFrame(msg.data); };
    ws.onclose = () => { if (this.ws === ws) this._lost("connection closed"); };
    ws.onerror = () => { /* onclose follows */ };
  }

  _onFrame(frame) {
    const type = frame[0];
    if (type === EIO_OPEN) {
      const open = JSON.parse(frame.slice(1));
      this.pingInterval = open.pingInterval;
      this.pingTimeout = open.pingTimeout;
      this._armPingTimer();
      this._send(EIO_MESSAGE + SIO_CONNECT + JSON.stringify(this.options.auth()));
    } else if (type === EIO_PING) {
      this._armPingTimer();
      this._send(EIO_PONG + frame.slice(1));
    } else if (type === EIO_CLOSE) {
      this._lost("server closed the session");
    } else if (type === EIO_MESSAGE) {
      this._onPacket(frame.slice(1));
    }
  }

  _onPacket(text) {
    const type = text[0];
    let rest = text.slice(1);
    if (rest.startsWith("/")) { // a namespace other than "/" would be named here
      const comma = rest.indexOf(",");
      rest = comma < 0 ? "" : rest.slice(comma + 1);
    }
    const digits = /^\d*/.exec(rest)[0];
    const id = digits ? Number(digits) : null;
    const payload = rest.length > digits.length ? JSON.parse(rest.slice(digits.length)) : undefined;
    if (type === SIO_CONNECT) {
      this.attempts = 0;
      this._setState("connected", payload);
    } else if (type === SIO_CONNECT_ERROR) {
      const message = (payload && payload.message) || "refused";
      if (message === "unauthorized") {
        this.stopped = true;
        this._teardown();
        this._setState("refused", message);
      } else {
        this._lost(message); // e.g. a store briefly unavailable: try again
      }
    } else if (type === SIO_DISCONNECT) {
      // The server ended the session (signed out, erased): do not come back.
      this.stopped = true;
      this._teardown();
      this._setState("refused", "disconnected by the server");
    } else if (type === SIO_EVENT && Array.isArray(payload)) {
      const [name, ...args] = payload;
      if (id !== null) this._send(EIO_MESSAGE + SIO_ACK + id + "[]"); // we have no ack handlers
      try { this.options.onEvent(name, args[0]); } catch (err) { console.error(err); }
    } else if (type === SIO_ACK && id !== null) {
      const waiter = this.pending.get(id);
      if (waiter) {
        this.pending.delete(id);
        clearTimeout(waiter.timer);
        waiter.resolve(Array.isArray(payload) ? payload[0] : undefined);
      }
    }
  }

  // The server pings every pingInterval; no ping within pingInterval + pingTimeout
  // means the connection is dead even if the socket has not noticed.
  _armPingTimer() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this._lost("ping timeout"), this.pingInterval + this.pingTimeout);
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  _lost(reason) {
    this._teardown();
    if (this.stopped) return;
    this._scheduleReconnect(reason);
  }

  _scheduleReconnect(reason) {
    this._setState("reconnecting", reason);
    const delay = Math.min(5000, 300 * 2 ** this.attempts) * (0.75 + Math.random() / 2);
    this.attempts += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { if (!this.stopped) this._open(); }, delay);
  }

  _teardown() {
    clearTimeout(this.pingTimer);
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("disconnected"));
    }
    this.pending.clear();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    }
  }

  _setState(state, detail) {
    this.state = state;
    if (this.options.onState) this.options.onState(state, detail);
  }
}
