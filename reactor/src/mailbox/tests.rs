use super::*;

#[test]
fn reply_arrives_across_threads() {
    let (tx, rx) = oneshot();
    std::thread::spawn(move || tx.send(42u32));
    assert_eq!(rx.wait(), Ok(42));
}

#[test]
fn dropped_replier_cancels() {
    let (tx, rx) = oneshot::<u32>();
    drop(tx);
    assert_eq!(rx.wait(), Err(ReplyError::Canceled));
}

#[test]
fn wait_timeout_expires() {
    let (_tx, rx) = oneshot::<u32>();
    assert_eq!(
        rx.wait_timeout(Duration::from_millis(1)),
        Err(ReplyError::TimedOut)
    );
}
