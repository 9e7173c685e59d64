//! QUIC through a link that loses datagrams: every message still arrives,
//! once, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::kit::{self, Scratch};
use crate::support::Client;

/// A UDP relay between one client and a server that drops a share of the
/// datagrams each way (once `lossy` is set), chosen by a seeded generator so
/// that a failure can be replayed.
struct LossyRelay {
    addr: SocketAddr,
    lossy: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl LossyRelay {
    async fn start(server: SocketAddr, loss: f64, seed: u64) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let lossy = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (on, lost, passed) = (lossy.clone(), dropped.clone(), forwarded.clone());
        let task = tokio::spawn(async move {
            let mut to_server = fastrand::Rng::with_seed(seed);
            let mut to_client = fastrand::Rng::with_seed(seed.wrapping_add(1));
            let mut client: Option<SocketAddr> = None;
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let keep = |rng: &mut fastrand::Rng| {
                let drop_it = on.load(Ordering::Relaxed) && rng.f64() < loss;
                let counter = if drop_it { &lost } else { &passed };
                counter.fetch_add(1, Ordering::Relaxed);
                !drop_it
            };
            loop {
                tokio::select! {
                    received = front.recv_from(&mut up) => {
                        let Ok((n, from)) = received else { return };
                        client = Some(from);
                        if keep(&mut to_server) {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    received = back.recv(&mut down) => {
                        let Ok(n) = received else { continue };
                        if let Some(client) = client
                            && keep(&mut to_client)
                        {
                            let _ = front.send_to(&down[..n], client).await;
                        }
                    }
                }
            }
        });
        LossyRelay {
            addr,
            lossy,
            dropped,
            forwarded,
            task,
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next `count` messages a client gets: ids and texts.
async fn messages<S>(c: &mut Client<S>, count: usize) -> Vec<(u64, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = Vec::new();
    for _ in 0..count {
        let m = c.next_message().await;
        let id = m["id"].as_u64().expect("an id");
        got.push((id, m["text"].as_str().expect("a text").to_string()));
    }
    got
}

#[tokio::test]
async fn every_message_crosses_a_lossy_quic_link_once_and_in_order() {
    const EACH: usize = 200;
    const LOSS: f64 = 0.15;
    let dir = Scratch::new("loss");
    let s = kit::start(&dir, |c| {
        c.rate_limit = 10_000.0;
        c.rate_burst = 10_000;
        c.request_rate = 0.0;
    })
    .await;
    let relay = LossyRelay::start(s.quic_addr.unwrap(), LOSS, 0x0a11_0e55).await;

    // The QUIC handshake crosses intact: its first retransmission waits
    // about a second (no round trip measured yet), which would only make
    // the test slow. From `hello` on, the link loses datagrams.
    let mut lossy = kit::dial(&format!("quic://{}", relay.addr), kit::trust(&dir)).await;
    relay.lossy.store(true, Ordering::Relaxed);
    lossy.enter("lossy").await;
    let mut steady = s.join("steady").await;
    assert_eq!(
        lossy.recv_type("joined").await["name"].as_str(),
        Some("steady")
    );

    // Both send at once; both read everything.
    let send_lossy = async {
        for i in 0..EACH {
            lossy.say(&format!("lossy {i}")).await;
        }
    };
    let send_steady = async {
        for i in 0..EACH {
            steady.say(&format!("steady {i}")).await;
        }
    };
    tokio::join!(send_lossy, send_steady);
    let by_lossy = messages(&mut lossy, 2 * EACH).await;
    let by_steady = messages(&mut steady, 2 * EACH).await;
    assert_eq!(by_lossy, by_steady, "the lossy member saw another order");
    for sender in ["lossy", "steady"] {
        let texts: Vec<&str> = by_lossy
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| t.starts_with(&format!("{sender} ")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("{sender} {i}")).collect();
        assert_eq!(texts, sent, "{sender}'s messages missing or out of order");
    }
    assert!(
        by_lossy.windows(2).all(|w| w[0].0 < w[1].0),
        "ids not strictly increasing"
    );
    let (dropped, forwarded) = (
        relay.dropped.load(Ordering::Relaxed),
        relay.forwarded.load(Ordering::Relaxed),
    );
    assert!(
        dropped * 20 >= forwarded,
        "the link lost too little to mean anything: {dropped} dropped, {forwarded} forwarded"
    );
    drop((lossy, steady));
    s.stop().await;
}
