//! A controller's handle on one of its queues: what a controller may ask of a queue
//! (close it, complete its held asynchronous events), sent to the reactor that owns
//! the queue's connection.
//!
//! Controllers are shared by queues on several reactors, and a queue's connection
//! lives on one reactor only; the handle carries that reactor's mailbox, the
//! connection's id, and the functions that run there. So the controller never calls
//! into the connection module (which depends on the controller).

use ferrox_reactor::ReactorHandle;

/// What runs on a queue's reactor when its controller asks; each takes the
/// connection's id, and does nothing when that connection is gone.
#[derive(Debug)]
pub struct QueueOps {
    /// Closes the connection, with the reason to log.
    pub close: fn(conn: u64, reason: &str),
    /// Completes held Asynchronous Event Requests with pending events.
    pub deliver_events: fn(conn: u64),
}

/// One queue of a controller, as the controller sees it.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    reactor: ReactorHandle,
    conn: u64,
    ops: &'static QueueOps,
}

impl QueueHandle {
    pub fn new(reactor: ReactorHandle, conn: u64, ops: &'static QueueOps) -> Self {
        Self { reactor, conn, ops }
    }

    /// The id of the queue's connection.
    pub fn conn_id(&self) -> u64 {
        self.conn
    }

    /// Asks the queue's reactor to close it (a no-op when it is gone).
    pub fn close(&self, reason: &str) {
        let (conn, close, reason) = (self.conn, self.ops.close, reason.to_string());
        if self.reactor.send(move |_| close(conn, &reason)).is_err() {
            tracing::error!(conn, "reactor mailbox full: cannot close connection");
        }
    }

    /// Asks the queue's reactor to complete its pending asynchronous events.
    pub fn deliver_events(&self) {
        let (conn, deliver) = (self.conn, self.ops.deliver_events);
        if self.reactor.send(move |_| deliver(conn)).is_err() {
            tracing::error!(
                conn,
                "reactor mailbox full: cannot deliver an asynchronous event"
            );
        }
    }
}

#[cfg(test)]
mod tests;
