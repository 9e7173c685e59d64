//! The web listener over real sockets: WebSocket members in the same room
//! and queue as TCP members, the adapter's mapping of WebSocket messages
//! and closes onto the protocol's rules, the origin rule, the HTTP side
//! (assets, methods, bodies, entity tags), the connection caps, WSS, the
//! client library and `anteroom chat` over `ws://`, and a raw WebSocket
//! client sending fragmented messages with pings in between.

mod support;

#[allow(dead_code)]
#[path = "transports/kit.rs"]
mod certs;
#[path = "web/kit.rs"]
mod kit;

#[path = "web/client.rs"]
mod client;
#[path = "web/closes.rs"]
mod closes;
#[path = "web/conformance.rs"]
mod conformance;
#[path = "web/http.rs"]
mod http;
#[path = "web/room.rs"]
mod room;
#[path = "web/wss.rs"]
mod wss;
