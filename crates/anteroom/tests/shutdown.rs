//! Shutdown reaches every connection with `bye{reason:"shutdown"}`, those
//! still in the kernel's accept backlog included.

mod support;

use support::{Client, TestServer};
use tokio::net::TcpStream;

#[tokio::test]
async fn connections_still_in_the_accept_backlog_get_bye() {
    let s = TestServer::start(|_| {}).await;
    // Blocking connects: the kernel accepts them into the backlog while
    // this single-threaded runtime gives the server no chance to run.
    let waiting: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    s.shutdown.cancel();
    for stream in waiting {
        stream.set_nonblocking(true).unwrap();
        let mut c = Client {
            stream: TcpStream::from_std(stream).unwrap(),
        };
        c.expect_bye("shutdown").await;
    }
}
