//! The chat guest: nicknames, fan-out to the others, join and leave notices.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::{PATIENCE, policy, start, stop_clean, tcp};

/// A chat client: its lines, its writer (also used by hostile_clients).
pub(crate) struct Client {
    pub(crate) lines: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub(crate) async fn join(addr: std::net::SocketAddr, nick: &str) -> Client {
        Client::join_with_recv_buffer(addr, nick, None).await
    }

    /// Joins through a socket whose receive buffer is `recv_buffer` bytes, if given (a slow
    /// reader fills it sooner).
    pub(crate) async fn join_with_recv_buffer(
        addr: std::net::SocketAddr,
        nick: &str,
        recv_buffer: Option<u32>,
    ) -> Client {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let (rd, writer) = socket.connect(addr).await.unwrap().into_split();
        let mut client = Client {
            lines: BufReader::new(rd),
            writer,
        };
        client.say(nick).await;
        client
    }

    pub(crate) async fn say(&mut self, text: &str) {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line, newline included, exactly as the guest sent it.
    pub(crate) async fn next_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, self.lines.read_line(&mut line))
            .await
            .expect("a line in time")
            .expect("read line");
        line
    }
}

#[tokio::test]
async fn joins_messages_and_leaves_reach_the_others() {
    let (guest, sockets) = start("chat", policy(&["127.0.0.1:0"], &[], &[]), &[]).await;
    let addr = tcp(&sockets);
    let mut alice = Client::join(addr, "alice").await;
    let mut bob = Client::join(addr, "bob").await;
    assert_eq!(alice.next_line().await, "* bob joined\n");
    let carol = Client::join(addr, "carol").await;
    assert_eq!(alice.next_line().await, "* carol joined\n");
    assert_eq!(bob.next_line().await, "* carol joined\n");
    let mut carol = carol;

    alice.say("hi").await;
    assert_eq!(bob.next_line().await, "alice: hi\n");
    assert_eq!(carol.next_line().await, "alice: hi\n");

    drop(carol);
    // Alice's next line is the leave: her own message was not sent back to her.
    assert_eq!(alice.next_line().await, "* carol left\n");
    assert_eq!(bob.next_line().await, "* carol left\n");

    bob.say("bye, alice").await;
    assert_eq!(alice.next_line().await, "bob: bye, alice\n");
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_the_others() {
    // A queue large enough for all 4 MB: this is about the others going on, while the
    // sleeper stays; dropping a sleeper that falls too far behind is in hostile_clients.rs.
    let args = ["--max-queue", "16777216"];
    let (guest, sockets) = start("chat", policy(&["127.0.0.1:0"], &[], &[]), &args).await;
    let addr = tcp(&sockets);
    let mut talker = Client::join(addr, "talker").await;
    let mut listener = Client::join(addr, "listener").await;
    assert_eq!(talker.next_line().await, "* listener joined\n");
    // Joins last and never reads: its socket buffers fill up long before the end.
    let _sleeper = Client::join(addr, "sleeper").await;
    assert_eq!(listener.next_line().await, "* sleeper joined\n");

    let text = "x".repeat(1000);
    let expected = format!("talker: {text}\n");
    let reader = tokio::spawn(async move {
        for i in 0..4000 {
            assert_eq!(listener.next_line().await, expected, "line {i}");
        }
    });
    for _ in 0..4000 {
        talker.say(&text).await; // 4 MB in all, far more than any socket buffer holds
    }
    tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the listener gets everything while the sleeper sleeps")
        .unwrap();
    stop_clean(guest).await;
}

#[tokio::test]
async fn a_client_that_leaves_with_unread_messages_does_not_freeze_the_room() {
    // A queue large enough for all 4 MB: this is about the others going on, while the
    // sleeper stays; dropping a sleeper that falls too far behind is in hostile_clients.rs.
    let args = ["--max-queue", "16777216"];
    let (guest, sockets) = start("chat", policy(&["127.0.0.1:0"], &[], &[]), &args).await;
    let addr = tcp(&sockets);
    let mut talker = Client::join(addr, "talker").await;
    let mut listener = Client::join(addr, "listener").await;
    assert_eq!(talker.next_line().await, "* listener joined\n");
    let mut sleeper = Client::join(addr, "sleeper").await;
    assert_eq!(listener.next_line().await, "* sleeper joined\n");

    // Enough for the sleeper that the guest still has a write in flight to it when it leaves.
    let text = "y".repeat(1000);
    let expected = format!("talker: {text}\n");
    for _ in 0..4000 {
        talker.say(&text).await;
    }
    for i in 0..4000 {
        assert_eq!(listener.next_line().await, expected, "line {i}");
    }
    // The sleeper half-closes without reading: the guest drops its connection with that
    // write still pending, and must go on serving the others at once.
    sleeper.writer.shutdown().await.unwrap();
    assert_eq!(listener.next_line().await, "* sleeper left\n");
    talker.say("still here?").await;
    assert_eq!(listener.next_line().await, "talker: still here?\n");
    drop(sleeper);
    stop_clean(guest).await;
}
