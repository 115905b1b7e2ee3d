//! chat: line-delimited UTF-8. A client's first line is its nickname; every later line goes to
//! all other clients as `<nick>: <text>\n`. Joins and leaves are announced to the others as
//! `* <nick> joined\n` and `* <nick> left\n`.
//!
//! Each client has its own outgoing queue, drained into its socket alongside its reading, so
//! a slow reader delays only itself. The queue is bounded (1 MiB of messages by default): a
//! client that falls that far behind is dropped, told `* you were too slow; disconnected\n`
//! (best effort: it is not reading), and the others see `* <nick> left\n`.
//!
//! Guest arguments (`sockbox run chat --listen ADDR -- ARGS`): `--max-queue BYTES` (default
//! 1048576), `--idle-timeout D` (default 5min: a client silent that long is disconnected;
//! `off` keeps lurkers), `--read-timeout D` (default 30s to finish a line once begun).
//!
//! Also the WASI 0.3 `chat-p3` (`guests/p3/chat`), built from this file with the SDK's `p3`
//! feature.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::rc::Rc;

use sockbox_guest::channel::{self, Receiver, SendError, Sender};
use sockbox_guest::future;
use sockbox_guest::lines::LineReader;
use sockbox_guest::net::{TcpStream, WriteHalf};
use sockbox_guest::options;
use sockbox_guest::serve::serve_tcp;
use sockbox_guest::timeouts::Timeouts;
use sockbox_guest::{Duration, timeout};

/// What a client dropped for falling behind is told, if it still takes a write.
const TOO_SLOW: &str = "* you were too slow; disconnected\n";

/// How long that notice may wait for room in the client's socket.
const NOTICE_WAIT: Duration = Duration::from_secs(5);

sockbox_guest::main!(async {
    let options = options(sockbox_guest::args())?;
    let room = Rc::new(RefCell::new(Room::default()));
    serve_tcp(move |stream, _peer| client(stream, room.clone(), options)).await?;
    Ok::<_, Box<dyn Error>>(())
});

async fn client(stream: TcpStream, room: Rc<RefCell<Room>>, options: Options) -> io::Result<()> {
    let (reader, writer) = stream.split();
    let mut lines = LineReader::new(reader).with_timeouts(options.timeouts);
    let Some(nick) = lines.next_line().await? else {
        return Ok(());
    };
    let (outbox, inbox) = channel::bounded_by(options.max_queue, |m: &Rc<str>| m.len());
    let (kick, mut kicked) = channel::bounded(1);
    let member = Member::join(room, nick, outbox, kick);
    let reading = async {
        while let Some(text) = lines.next_line().await? {
            member.say(&format!("{}: {text}\n", member.nick));
        }
        Ok(())
    };
    let dropped = async {
        kicked.recv().await;
        Err(io::Error::other("fell behind; dropped"))
    };
    let result = future::or(future::or(reading, deliver(inbox, &writer)), dropped).await;
    if !member.in_room() {
        // Best effort: the write that was cut off may have left half a line before it.
        let _ = timeout(NOTICE_WAIT, writer.write_all(TOO_SLOW.as_bytes())).await;
    }
    // `member` is dropped here: the leave is announced unless the room already did.
    result
}

/// Writes the client's queued messages in order.
async fn deliver(mut inbox: Receiver<Rc<str>>, writer: &WriteHalf) -> io::Result<()> {
    while let Some(message) = inbox.recv().await {
        writer.write_all(message.as_bytes()).await?;
    }
    Ok(())
}

/// Everyone connected and named, by connection id.
#[derive(Default)]
struct Room {
    next_id: u64,
    members: HashMap<u64, Seat>,
}

/// What the room holds of a member: its name, its queue, and the way to drop it.
struct Seat {
    nick: Rc<str>,
    outbox: Sender<Rc<str>>,
    kick: Sender<()>,
}

impl Room {
    fn add(&mut self, seat: Seat) -> u64 {
        self.next_id += 1;
        self.members.insert(self.next_id, seat);
        self.next_id
    }

    /// Sends `message` to everyone but `from`. Members whose queue is full are dropped, and
    /// their leave goes to the others in turn (which may drop more).
    fn send_to_others(&mut self, from: u64, message: &str) {
        let mut pending = vec![(from, Rc::<str>::from(message))];
        while let Some((from, message)) = pending.pop() {
            let mut behind = Vec::new();
            for (&id, seat) in self.members.iter().filter(|(id, _)| **id != from) {
                if let Err(SendError::Full(_)) = seat.outbox.send(message.clone()) {
                    behind.push(id);
                }
                // Closed: its connection is ending and leaves by itself.
            }
            for id in behind {
                if let Some(seat) = self.members.remove(&id) {
                    let _ = seat.kick.send(());
                    pending.push((id, format!("* {} left\n", seat.nick).into()));
                }
            }
        }
    }
}

/// One client in the room: joining announces it, dropping it (however the connection ends)
/// announces the leave, unless the room dropped it already.
struct Member {
    room: Rc<RefCell<Room>>,
    id: u64,
    nick: Rc<str>,
}

impl Member {
    fn join(
        room: Rc<RefCell<Room>>,
        nick: String,
        outbox: Sender<Rc<str>>,
        kick: Sender<()>,
    ) -> Member {
        let nick: Rc<str> = nick.into();
        let seat = Seat {
            nick: nick.clone(),
            outbox,
            kick,
        };
        let id = room.borrow_mut().add(seat);
        let member = Member { room, id, nick };
        member.say(&format!("* {} joined\n", member.nick));
        member
    }

    fn say(&self, message: &str) {
        self.room.borrow_mut().send_to_others(self.id, message);
    }

    fn in_room(&self) -> bool {
        self.room.borrow().members.contains_key(&self.id)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let seat = self.room.borrow_mut().members.remove(&self.id);
        if seat.is_some() {
            self.say(&format!("* {} left\n", self.nick));
        }
    }
}

#[derive(Clone, Copy)]
struct Options {
    max_queue: usize,
    timeouts: Timeouts,
}

const USAGE: &str = "usage: chat [--max-queue BYTES] [--idle-timeout D] [--read-timeout D]";

fn options(args: Vec<String>) -> Result<Options, String> {
    let mut max_queue = 1 << 20;
    let timeouts = options::parse(args, USAGE, &mut [("max-queue", &mut max_queue)])?;
    Ok(Options {
        max_queue,
        timeouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_bound_and_timeouts_come_from_the_arguments() {
        let args = ["--max-queue", "4096", "--idle-timeout", "off"].map(String::from);
        let o = options(args.to_vec()).unwrap();
        assert_eq!(o.max_queue, 4096);
        assert_eq!(o.timeouts.idle, None);
        assert_eq!(o.timeouts.read, Timeouts::default().read);
        let err = options(["--max-queue", "lots"].map(String::from).to_vec())
            .err()
            .unwrap();
        assert!(err.contains("--max-queue") && err.contains("lots"), "{err}");
    }

    #[test]
    fn a_full_queue_drops_its_member_and_the_others_hear_it_left() {
        let mut room = Room::default();
        let (fast_out, mut fast_in) = channel::unbounded();
        let (slow_out, _slow_in) = channel::bounded_by(8, |m: &Rc<str>| m.len());
        let (fast_kick, _) = channel::bounded(1);
        let (slow_kick, slow_kicked) = channel::bounded(1);
        let seat = |nick: &str, outbox, kick| Seat {
            nick: nick.into(),
            outbox,
            kick,
        };
        let talker = room.add(seat(
            "talker",
            channel::unbounded().0,
            channel::bounded(1).0,
        ));
        room.add(seat("fast", fast_out, fast_kick));
        let slow = room.add(seat("slow", slow_out, slow_kick));
        room.send_to_others(talker, "hello\n"); // 6 bytes: fits
        room.send_to_others(talker, "again\n"); // 12 > 8: slow is dropped
        assert!(!room.members.contains_key(&slow));
        assert_eq!(
            slow_kicked.len(),
            1,
            "the slow one's connection is told to go"
        );
        let heard: Vec<String> = std::iter::from_fn(|| next_queued(&mut fast_in)).collect();
        assert_eq!(heard, ["hello\n", "again\n", "* slow left\n"]);
    }

    /// The next queued message, without waiting.
    fn next_queued(inbox: &mut Receiver<Rc<str>>) -> Option<String> {
        if inbox.is_empty() {
            return None;
        }
        sockbox_guest::future::block_on(inbox.recv()).map(|m| m.to_string())
    }
}
