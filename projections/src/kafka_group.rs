//! Removing a dead node from the writer group on the other nodes' word.
//!
//! A Kafka coordinator expires a member that stops heartbeating after its session timeout,
//! and its partitions move. Not every Kafka-protocol broker does (noida-db 0.2.3 expires only
//! members that still heartbeat, late), so a node that finds a partition's writer gone asks
//! the coordinator to remove it, as Kafka's `removeMembersFromConsumerGroup` does: it finds
//! the dead node's member ids by its `client.id` (the node's URL) through DescribeGroups
//! (librdkafka), then sends FindCoordinator and LeaveGroup for each (kafka-protocol over TCP;
//! librdkafka has no call for leaving on another member's behalf). A live member removed by
//! mistake just joins again.

use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, LeaveGroupRequest, LeaveGroupResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Versions both old and new brokers speak (not "flexible", so no tagged fields).
const FIND_COORDINATOR_VERSION: i16 = 1;
const LEAVE_GROUP_VERSION: i16 = 1;
/// Kafka's error code for "not the coordinator" and "coordinator loading".
const RETRIABLE: [i16; 2] = [14, 16];

/// One request and its response on a fresh connection.
fn call<Q: Encodable + HeaderVersion, A: Decodable + HeaderVersion>(
    address: &str,
    key: ApiKey,
    request: &Q,
    version: i16,
    timeout: Duration,
) -> anyhow::Result<A> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("taskledger-group-admin")));
    let mut body = bytes::BytesMut::new();
    header.encode(&mut body, Q::header_version(version))?;
    request.encode(&mut body, version)?;
    let size = i32::try_from(body.len())?;
    stream.write_all(&size.to_be_bytes())?;
    stream.write_all(&body)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size))?;
    anyhow::ensure!(size <= 1 << 20, "response of {size} bytes");
    let mut answer = vec![0u8; size];
    stream.read_exact(&mut answer)?;
    let mut answer = bytes::Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, A::header_version(version))?;
    anyhow::ensure!(header.correlation_id == 1, "answer to another request");
    A::decode(&mut answer, version)
}

/// The group's coordinator (`host:port`), asked of the first bootstrap broker that answers.
fn coordinator(brokers: &str, group: &str, timeout: Duration) -> anyhow::Result<String> {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let mut last = anyhow::anyhow!("no bootstrap broker");
    for broker in brokers.split(',').map(str::trim) {
        let answer: anyhow::Result<FindCoordinatorResponse> = call(
            broker,
            ApiKey::FindCoordinator,
            &request,
            FIND_COORDINATOR_VERSION,
            timeout,
        );
        match answer {
            Ok(r) if r.error_code == 0 => return Ok(format!("{}:{}", r.host, r.port)),
            Ok(r) => last = anyhow::anyhow!("FindCoordinator: error {}", r.error_code),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Removes `member_ids` from `group`; how many the coordinator removed.
pub fn remove_members(
    brokers: &str,
    group: &str,
    member_ids: &[String],
    timeout: Duration,
) -> anyhow::Result<usize> {
    let mut removed = 0;
    for member in member_ids {
        let request = LeaveGroupRequest::default()
            .with_group_id(StrBytes::from_string(group.to_string()).into())
            .with_member_id(StrBytes::from_string(member.clone()));
        let mut answered = None;
        for _ in 0..3 {
            let address = coordinator(brokers, group, timeout)?;
            let r: LeaveGroupResponse = call(
                &address,
                ApiKey::LeaveGroup,
                &request,
                LEAVE_GROUP_VERSION,
                timeout,
            )?;
            if !RETRIABLE.contains(&r.error_code) {
                answered = Some(r.error_code);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match answered {
            Some(0) => removed += 1,
            // 25: unknown member (already gone)
            Some(25) => {}
            Some(code) => anyhow::bail!("LeaveGroup for {member}: error {code}"),
            None => anyhow::bail!("LeaveGroup for {member}: the coordinator kept moving"),
        }
    }
    Ok(removed)
}
