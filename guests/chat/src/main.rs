//! chat: line-delimited UTF-8. A client's first line is its nickname; every later line goes to
//! all other clients as `<nick>: <text>\n`. Joins and leaves are announced to the others as
//! `* <nick> joined\n` and `* <nick> left\n`.
//!
//! Each client has its own outgoing queue drained by its own task, so a slow reader delays
//! only itself. The room is shared by all connection tasks on the single-threaded reactor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;

use sockbox_guest::channel::{self, Receiver, Sender};
use sockbox_guest::lines::LineReader;
use sockbox_guest::net::{TcpStream, WriteHalf};
use sockbox_guest::serve::serve_tcp;

fn main() -> ExitCode {
    let room = Rc::new(RefCell::new(Room::default()));
    sockbox_guest::run(serve_tcp(move |stream, _peer| client(stream, room.clone())))
}

async fn client(stream: TcpStream, room: Rc<RefCell<Room>>) -> io::Result<()> {
    let (reader, writer) = stream.split();
    let mut lines = LineReader::new(reader);
    let Some(nick) = lines.next_line().await? else {
        return Ok(());
    };
    let (outbox, inbox) = channel::unbounded();
    let _delivery = sockbox_guest::spawn(deliver(inbox, writer));
    let member = Member::join(room, nick, outbox);
    while let Some(text) = lines.next_line().await? {
        member.say(&format!("{}: {text}\n", member.nick));
    }
    // Dropped in reverse order: `member` announces the leave, then delivery is cancelled.
    Ok(())
}

/// Writes the client's queued messages in order; ends when the client is gone.
async fn deliver(mut inbox: Receiver<Rc<str>>, writer: WriteHalf) -> io::Result<()> {
    while let Some(message) = inbox.recv().await {
        writer.write_all(message.as_bytes()).await?;
    }
    Ok(())
}

/// Everyone connected and named, each by connection id with the queue to reach them.
#[derive(Default)]
struct Room {
    next_id: u64,
    outboxes: HashMap<u64, Sender<Rc<str>>>,
}

impl Room {
    fn add(&mut self, outbox: Sender<Rc<str>>) -> u64 {
        self.next_id += 1;
        self.outboxes.insert(self.next_id, outbox);
        self.next_id
    }

    fn send_to_others(&self, from: u64, message: &str) {
        let message: Rc<str> = message.into();
        for (_, outbox) in self.outboxes.iter().filter(|(id, _)| **id != from) {
            // A client whose delivery task has ended is about to leave; nothing to do.
            let _ = outbox.send(message.clone());
        }
    }
}

/// One client in the room: joining announces it, dropping it (however the connection ends)
/// announces the leave.
struct Member {
    room: Rc<RefCell<Room>>,
    id: u64,
    nick: String,
}

impl Member {
    fn join(room: Rc<RefCell<Room>>, nick: String, outbox: Sender<Rc<str>>) -> Member {
        let id = room.borrow_mut().add(outbox);
        let member = Member { room, id, nick };
        member.say(&format!("* {} joined\n", member.nick));
        member
    }

    fn say(&self, message: &str) {
        self.room.borrow().send_to_others(self.id, message);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.room.borrow_mut().outboxes.remove(&self.id);
        self.say(&format!("* {} left\n", self.nick));
    }
}
