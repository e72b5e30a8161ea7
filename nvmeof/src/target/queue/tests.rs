use std::sync::Mutex;

use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, Reactor, ReactorGroup, ReactorOptions,
};

use super::*;

/// (connection, reason, reactor it ran on) of every close; (connection, reactor) of
/// every delivery.
static CLOSED: Mutex<Vec<(u64, String, usize)>> = Mutex::new(Vec::new());
static DELIVERED: Mutex<Vec<(u64, usize)>> = Mutex::new(Vec::new());

static RECORDING: QueueOps = QueueOps {
    close: |conn, reason| {
        let on = Reactor::with(|r| r.id());
        CLOSED.lock().unwrap().push((conn, reason.to_string(), on));
    },
    deliver_events: |conn| {
        let on = Reactor::with(|r| r.id());
        DELIVERED.lock().unwrap().push((conn, on));
    },
};

#[test]
fn requests_run_on_the_queues_reactor() {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![ClassConfig {
            size: 4096,
            count: 16,
        }],
        hugepages: false,
    })
    .unwrap();
    let core = available_cores()[0];
    let g = ReactorGroup::start(&[core, core], &ReactorOptions::default(), pool).unwrap();
    let h = &g.handles()[1];
    let q = QueueHandle::new(h.clone(), 7, &RECORDING);
    assert_eq!(q.conn_id(), 7);
    q.deliver_events();
    q.clone().close("controller reset");
    // A mailbox runs its messages in order: once this one ran, so did those before.
    h.call(|_| ()).unwrap().wait().unwrap();
    assert_eq!(
        *CLOSED.lock().unwrap(),
        [(7, "controller reset".to_string(), h.id())]
    );
    assert_eq!(*DELIVERED.lock().unwrap(), [(7, h.id())]);
    g.shutdown();
}
