use std::sync::Arc;
use std::time::Duration;

use ferrox_reactor::mailbox::oneshot;
use ferrox_reactor::{
    available_cores, BufferPool, ClassConfig, PoolConfig, Reactor, ReactorGroup, ReactorOptions,
};

use crate::{malloc, BdevError, BlockDevice, IoChannel, IoOp};

fn group() -> ReactorGroup {
    let pool = BufferPool::new(&PoolConfig {
        classes: vec![ClassConfig {
            size: 4096,
            count: 16,
        }],
        hugepages: false,
    })
    .unwrap();
    let core = available_cores()[0];
    ReactorGroup::start(&[core], &ReactorOptions::default(), pool).unwrap()
}

#[test]
fn a_task_awaits_its_requests() {
    let g = group();
    let dev: Arc<dyn BlockDevice> = malloc::MallocBdev::new("m0", 64, 512).unwrap();
    let (tx, rx) = oneshot();
    g.handles()[0]
        .send(move |r: &Reactor| {
            let chan = IoChannel::open(dev, r).unwrap();
            r.spawn_local(async move {
                let mut buf = Reactor::with(|r| r.pool().alloc(4096)).unwrap();
                buf.as_mut_slice().fill(0xa5);
                let (w, _) = chan
                    .submit_async(IoOp::Write {
                        lba: 8,
                        blocks: 8,
                        buf,
                        fua: false,
                    })
                    .await;
                let buf = Reactor::with(|r| r.pool().alloc(4096)).unwrap();
                let (rd, buf) = chan
                    .submit_async(IoOp::Read {
                        lba: 8,
                        blocks: 8,
                        buf,
                    })
                    .await;
                let data = buf.map(|b| b.as_slice().to_vec());
                let (flush, _) = chan.submit_async(IoOp::Flush).await;
                // Past the end: refused by the checks, resolved at once.
                let (oob, _) = chan
                    .submit_async(IoOp::WriteZeroes { lba: 63, blocks: 2 })
                    .await;
                tx.send((w, rd, data, flush, oob.is_err()));
            });
        })
        .unwrap();
    let (w, rd, data, flush, oob) = rx.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(w, Ok(()));
    assert_eq!(rd, Ok(()));
    assert_eq!(data, Some(vec![0xa5; 4096]));
    assert_eq!(flush, Ok::<(), BdevError>(()));
    assert!(oob, "a request past the end fails");
}
