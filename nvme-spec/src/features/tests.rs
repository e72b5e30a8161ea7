use super::*;

#[test]
fn get_and_set_features() {
    let set = SetFeatures {
        fid: FeatureId::NUMBER_OF_QUEUES,
        sv: true,
        cdw11: 0x0003_0007,
        ..Default::default()
    };
    let cmd = set.to_command(5);
    assert_eq!(cmd.cdw10, 0x8000_0007);
    assert_eq!(SetFeatures::parse(&cmd), set);
    let nq = NumberOfQueues::from_dword(cmd.cdw11);
    assert_eq!((nq.nsq, nq.ncq), (7, 3));
    assert_eq!(nq.to_dword(), 0x0003_0007);

    let get = GetFeatures {
        fid: FeatureId::KEEP_ALIVE_TIMER,
        sel: FeatureSelect::SUPPORTED_CAPABILITIES,
        ..Default::default()
    };
    let cmd = get.to_command(6);
    assert_eq!(cmd.cdw10, 0x30F);
    assert_eq!(GetFeatures::parse(&cmd), get);
    assert_eq!(format!("{:?}", FeatureId(0x0B)), "ASYNC_EVENT_CONFIG");
}

#[test]
fn async_events() {
    assert_eq!(AsyncEventConfig::NS_ATTR_CHANGED.bits(), 1 << 8);
    assert_eq!(AsyncEventConfig::DISCOVERY_LOG_CHANGE.bits(), 1 << 31);
    assert_eq!(AsyncEvent::NS_ATTR_CHANGED.to_dw0(), 0x0004_0002);
    assert_eq!(AsyncEvent::ANA_CHANGE.to_dw0(), 0x000C_0302);
    assert_eq!(AsyncEvent::DISCOVERY_LOG_CHANGE.to_dw0(), 0x0070_F002);
    assert_eq!(
        AsyncEvent::from_dw0(0x0003_0102),
        AsyncEvent::FW_ACTIVATION_STARTING
    );
}
