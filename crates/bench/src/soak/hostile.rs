//! Misbehaviour: what hostile or broken clients do to the server, before
//! `hello` and in the room, and which errors and goodbyes they provoke
//! (anything else the server answers is a finding).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::checks::Kind;
use super::plan::{Act, Pre};
use super::session::{Got, Session};
use crate::lock;
use anteroom_client::protocol::ClientMessage;
use anteroom_protocol::codec::encode_frame;

/// The default `max_message_bytes`; a longer `say` is refused.
const MAX_MESSAGE_BYTES: usize = 4096;

impl Session {
    /// From now on, the server may end the connection with `reason`: this
    /// client did something to deserve it.
    fn deserve_bye(&mut self, reason: &'static str) {
        self.behaved = false;
        self.expect_bye.push(reason);
    }

    /// A length over `max_frame_bytes`: `frame_too_large`, then closed.
    async fn send_oversized_length(&mut self) {
        self.deserve_bye("protocol_error");
        self.allow("frame_too_large");
        self.send_raw(&0x7fff_ffffu32.to_be_bytes()).await;
    }

    /// A frame with a type and no other field.
    async fn send_type_only(&mut self, ty: &str) {
        let mut map = BTreeMap::new();
        map.insert("type", ty);
        if let Ok(frame) = encode_frame(&map) {
            self.send_frame(&frame).await;
        }
    }

    /// Misbehaves before `hello` as planned; false once the session is over.
    pub(super) async fn before_hello(&mut self, pre: Pre) -> bool {
        if pre != Pre::Nothing {
            self.shared.tally_act(pre.name());
        }
        match pre {
            Pre::Nothing => true,
            Pre::Silent => {
                self.deserve_bye("handshake_timeout");
                self.silent = true;
                let limit = self.patience_for(|t| t.handshake, Duration::from_secs(10));
                let over = self.wait_over(limit).await;
                self.judge(&over, "after saying nothing");
                false
            }
            Pre::HalfFrame => {
                self.send_raw(&[0, 0]).await;
                false
            }
            Pre::Oversized => {
                self.send_oversized_length().await;
                let over = self.wait_over(Duration::from_secs(10)).await;
                self.judge(&over, "after an oversized length");
                false
            }
            Pre::SayFirst => {
                self.allow("handshake_required");
                self.send(&ClientMessage::Say {
                    text: ("early").into(),
                    attachment: None,
                })
                .await;
                true
            }
        }
    }

    /// Says `hello` with a name the server must refuse; false once the
    /// session is over.
    pub(super) async fn try_bad_name(&mut self, rng: &mut fastrand::Rng) -> bool {
        const BAD: [&str; 5] = [
            "",
            "   ",
            "a\u{7}b",
            "x\u{85}y",
            "abcdefghijklmnopqrstuvwxyz0123456",
        ];
        let bad = BAD[rng.usize(..BAD.len())];
        self.allow("name_invalid");
        self.send(&ClientMessage::Hello {
            name: (bad).into(),
            features: None,
            last_id: None,
            resume: None,
        })
        .await;
        match self.admission().await {
            Some(Got::Refused(_)) => {}
            Some(_) => self.report(Kind::Protocol, format!("name {bad:?} accepted")),
            None => return false,
        }
        true
    }

    /// Says `hello` with the name another client holds; false once the
    /// session is over.
    pub(super) async fn try_taken_name(&mut self, rng: &mut fastrand::Rng) -> bool {
        let other = {
            let held = lock(&self.shared.held);
            held.get(&rng.usize(..self.shared.args.clients.max(1)))
                .cloned()
        };
        if let Some(other) = other.filter(|o| *o != self.name) {
            // Names are compared after lower-casing: this is the same name.
            // If its holder has just left, the name is free and becomes
            // this session's, outside the first-in first-out check.
            let own = std::mem::replace(&mut self.name, other.to_uppercase());
            self.own_name = false;
            self.allow("name_taken");
            let taken = self.name.clone();
            self.send(&ClientMessage::Hello {
                name: (&taken).into(),
                features: None,
                last_id: None,
                resume: None,
            })
            .await;
            match self.admission().await {
                Some(Got::Refused(_)) => {
                    self.name = own;
                    self.own_name = true;
                }
                Some(_) => {}
                None => return false,
            }
        }
        true
    }

    /// Misbehaves once; true when the server must now end the connection.
    pub(super) async fn act(&mut self, act: Act) -> bool {
        match act {
            Act::Nothing => false,
            Act::Flood => {
                for _ in 0..60 {
                    if !self.say(0).await {
                        break;
                    }
                }
                false
            }
            Act::BadPayload => {
                self.allow("bad_frame");
                self.send_frame(&[0, 0, 0, 2, 0xc1, 0xc1]).await;
                false
            }
            Act::UnknownType => {
                self.allow("unknown_type");
                self.send_type_only("dance").await;
                false
            }
            Act::BadRequest => {
                self.allow("bad_request");
                self.send_type_only("say").await;
                false
            }
            Act::SecondHello => {
                self.allow("bad_request");
                let name = self.name.clone();
                self.send(&ClientMessage::Hello {
                    name: (&name).into(),
                    features: None,
                    last_id: None,
                    resume: None,
                })
                .await;
                false
            }
            Act::TooLong => {
                self.allow("message_too_long");
                let text = "x".repeat(MAX_MESSAGE_BYTES + 1);
                self.send(&ClientMessage::Say {
                    text: (&text).into(),
                    attachment: None,
                })
                .await;
                false
            }
            Act::StopReading(pause) => {
                self.deserve_bye("slow_consumer");
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    if !self.send(&ClientMessage::Ping { id: None }).await {
                        break;
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                }
                false
            }
            Act::WhoFlood => {
                self.deserve_bye("slow_consumer");
                let who = ClientMessage::Who.to_frame();
                let burst = who.repeat(1000);
                for _ in 0..10 {
                    if !self.send_frame(&burst).await {
                        break;
                    }
                }
                false
            }
            Act::Silent => {
                self.deserve_bye("idle_timeout");
                self.silent = true;
                true
            }
            Act::HalfFrame => {
                self.deserve_bye("idle_timeout");
                self.silent = true;
                self.send_raw(&[0, 0, 0, 40, 0x82]).await;
                true
            }
            Act::Oversized => {
                self.send_oversized_length().await;
                true
            }
            Act::ZeroLength => {
                self.deserve_bye("protocol_error");
                self.allow("bad_frame");
                self.send_raw(&[0, 0, 0, 0]).await;
                true
            }
        }
    }
}
