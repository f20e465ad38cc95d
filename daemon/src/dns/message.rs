//! DNS wire handling for the proxy: parse a container's query, and write the responses the proxy
//! sends back (an upstream's reply is read by [`super::reply`]).
//!
//! Everything here is pure (bytes in, bytes out) so that it is tested without sockets. TTLs
//! handed to the client are capped, so a client does not keep using an address longer than
//! shield keeps it open.

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

/// Length of the fixed DNS header.
pub(super) const HEADER_LEN: usize = 12;
/// The smallest UDP payload every DNS client accepts (RFC 1035).
const MIN_UDP_PAYLOAD: u16 = 512;
/// The largest UDP payload the proxy will send, whatever the client advertises: bigger datagrams
/// fragment, and fragments are easy to spoof and often dropped.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// The UDP payload size the proxy advertises in its own OPT records (DNS flag day 2020).
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;

/// QR bit in the third header byte: set in responses.
pub(super) const QR_BIT: u8 = 0b1000_0000;
/// Opcode field in the third header byte.
const OPCODE_MASK: u8 = 0b0111_1000;
/// RD bit in the third header byte.
const RD_BIT: u8 = 0b0000_0001;
/// RA bit in the fourth header byte.
const RA_BIT: u8 = 0b1000_0000;

/// A parsed query from a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The client's message id.
    pub id: u16,
    /// The question's name: lower-case, without the trailing dot; labels containing a dot or
    /// unprintable bytes are backslash-escaped (`Name::to_ascii`).
    pub name: String,
    /// The same name in wire form (length-prefixed labels, the root's empty label last), letters
    /// lower-cased: what an upstream reply's names are compared with.
    pub name_wire: Vec<u8>,
    /// The question's type.
    pub record_type: RecordType,
    /// The question's class.
    pub class: DNSClass,
    /// The largest UDP response the client accepts: max(512, its EDNS size), at most
    /// [`MAX_UDP_PAYLOAD`].
    pub udp_payload: u16,
    /// The parsed message, kept to echo its question and EDNS in responses.
    message: Message,
}

impl Query {
    /// The question as the client wrote it (original letter case), for echoing.
    pub fn question(&self) -> Option<&hickory_proto::op::Query> {
        self.message.queries.first()
    }

    /// Whether the client sent an EDNS OPT record.
    pub fn has_edns(&self) -> bool {
        self.message.edns.is_some()
    }

    /// Whether the client asked for recursion.
    pub fn recursion_desired(&self) -> bool {
        self.message.metadata.recursion_desired
    }
}

/// Why bytes from a container are not a query the proxy answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not a DNS message (`id` is known when at least two bytes arrived).
    #[error("malformed DNS message")]
    Malformed {
        /// The message id, if present.
        id: Option<u16>,
    },
    /// A response (QR set), or an opcode other than QUERY.
    #[error("not a standard query")]
    NotAQuery {
        /// The message id.
        id: u16,
    },
    /// The message does not carry exactly one question.
    #[error("{count} questions instead of one")]
    QuestionCount {
        /// The message id.
        id: u16,
        /// The question count from the header.
        count: u16,
    },
    /// The name is longer than the configured limit (a cheap exfiltration channel).
    #[error("name of {len} characters is too long")]
    NameTooLong {
        /// The message id.
        id: u16,
        /// The name's length (labels and the dots between them, without escapes).
        len: usize,
    },
}

impl QueryError {
    /// The message id, if known.
    pub fn id(&self) -> Option<u16> {
        match self {
            Self::Malformed { id } => *id,
            Self::NotAQuery { id }
            | Self::QuestionCount { id, .. }
            | Self::NameTooLong { id, .. } => Some(*id),
        }
    }

    /// The response code to answer with, through [`error_for`] (which never answers a response).
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Self::Malformed { .. } | Self::QuestionCount { .. } => ResponseCode::FormErr,
            Self::NotAQuery { .. } => ResponseCode::NotImp,
            Self::NameTooLong { .. } => ResponseCode::Refused,
        }
    }
}

/// Parses a query from a container, rejecting names longer than `max_name_len`.
pub fn parse_query(bytes: &[u8], max_name_len: usize) -> Result<Query, QueryError> {
    let Some(id) = read_id(bytes) else {
        return Err(QueryError::Malformed { id: None });
    };
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(QueryError::Malformed { id: Some(id) });
    };
    // The header is checked on the raw bytes first so that a response or an unknown opcode is
    // classified as such even when the rest would not parse.
    if header[2] & (QR_BIT | OPCODE_MASK) != 0 {
        return Err(QueryError::NotAQuery { id });
    }
    let count = u16::from_be_bytes([header[4], header[5]]);
    if count != 1 {
        return Err(QueryError::QuestionCount { id, count });
    }
    let message = Message::from_vec(bytes).map_err(|_| QueryError::Malformed { id: Some(id) })?;
    let Some(question) = message.queries.first() else {
        return Err(QueryError::Malformed { id: Some(id) });
    };
    let len = name_len(question.name());
    if len > max_name_len {
        return Err(QueryError::NameTooLong { id, len });
    }
    let udp_payload = message
        .max_payload()
        .clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD);
    Ok(Query {
        id,
        name: normalized(question.name()),
        name_wire: lowercase_wire(question.name()),
        record_type: question.query_type(),
        class: question.query_class(),
        udp_payload,
        message,
    })
}

/// A response to `query` carrying only its question (and an OPT if it had one) with `rcode`.
pub fn error_response(query: &Query, rcode: ResponseCode) -> Vec<u8> {
    empty_response(query, rcode, false)
}

/// An empty NOERROR response with TC set and the question: tells a UDP client to retry over TCP
/// when the real answer is bigger than `query.udp_payload`.
pub fn truncated(query: &Query) -> Vec<u8> {
    empty_response(query, ResponseCode::NoError, true)
}

/// A header-only response with `rcode` to bytes that are not an acceptable query (see
/// [`QueryError::response_code`]). `None` when there is no id, or when the bytes are themselves a
/// response: answering responses could make two responders bounce errors at each other forever.
pub fn error_for(bytes: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let id = read_id(bytes)?;
    let flags = bytes.get(2).copied().unwrap_or(0);
    if flags & QR_BIT != 0 {
        return None;
    }
    Some(header_only(id, flags, rcode))
}

/// Why a reply could not be re-encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the DNS reply: {0}")]
pub struct EncodeError(#[from] ProtoError);

/// `reply` re-encoded for the client: its `id`, and every record's TTL reduced by `age` seconds
/// (the time it spent in the cache, never below 0) and capped at `max_ttl`, so the client does
/// not use an address longer than shield lets it through.
pub fn rewrite_reply(
    reply: &Message,
    id: u16,
    max_ttl: u32,
    age: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut message = reply.clone();
    message.metadata.id = id;
    // The OPT pseudo-record is not in these sections (hickory keeps it in `edns`), so its
    // TTL-encoded flags are left alone.
    for record in message
        .answers
        .iter_mut()
        .chain(message.authorities.iter_mut())
        .chain(message.additionals.iter_mut())
    {
        record.ttl = record.ttl.saturating_sub(age).min(max_ttl);
    }
    Ok(message.to_vec()?)
}

/// `bytes` with the message id replaced by `id` (fast path for replies forwarded unchanged).
pub fn with_id(bytes: &[u8], id: u16) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    set_id(&mut copy, id);
    copy
}

/// Replaces the message id in place (no-op on messages shorter than an id), e.g. to forward a
/// query upstream under a random id.
pub fn set_id(message: &mut [u8], id: u16) {
    if let Some(slot) = message.get_mut(..2) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
}

fn read_id(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    }
}

/// Lower-case presentation form without the trailing dot (the form [`Query::name`] uses).
fn normalized(name: &Name) -> String {
    let mut text = name.to_ascii();
    if name.is_fqdn() && text.ends_with('.') {
        text.pop();
    }
    text.make_ascii_lowercase();
    text
}

/// `name` in wire form with its letters lower-cased (see [`Query::name_wire`]).
fn lowercase_wire(name: &Name) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len().saturating_add(2));
    for label in name.iter() {
        // A label of a parsed name is at most 63 bytes long.
        wire.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        wire.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    wire.push(0);
    wire
}

/// The name's length as labels and the dots between them, without escapes or the root.
fn name_len(name: &Name) -> usize {
    let labels: Vec<&[u8]> = name.iter().collect();
    let bytes: usize = labels.iter().map(|label| label.len()).sum();
    bytes + labels.len().saturating_sub(1)
}

fn empty_response(query: &Query, rcode: ResponseCode, truncation: bool) -> Vec<u8> {
    let asked = &query.message.metadata;
    let mut response = Message::response(query.id, asked.op_code);
    response.metadata.recursion_desired = asked.recursion_desired;
    response.metadata.checking_disabled = asked.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.truncation = truncation;
    response.metadata.response_code = rcode;
    response.add_queries(query.message.queries.iter().cloned());
    if let Some(asked_edns) = &query.message.edns {
        // RFC 6891: a response to a query with OPT carries an OPT. The client's options (cookies
        // and the like) are not echoed: the proxy does not implement them.
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_UDP_PAYLOAD);
        edns.set_dnssec_ok(asked_edns.flags().dnssec_ok);
        response.set_edns(edns);
    }
    match response.to_vec() {
        Ok(bytes) => bytes,
        // Encoding an echoed question cannot realistically fail; if it does, the client still
        // gets an answer with the right id and code.
        Err(_) => {
            let flags = (u8::from(asked.op_code) << 3) & OPCODE_MASK
                | if asked.recursion_desired { RD_BIT } else { 0 };
            header_only(query.id, flags, rcode)
        }
    }
}

/// A response header without records: `query_flags` is the query's third header byte, whose
/// opcode and RD bit are copied.
fn header_only(id: u16, query_flags: u8, rcode: ResponseCode) -> Vec<u8> {
    let mut header = vec![0; HEADER_LEN];
    header[..2].copy_from_slice(&id.to_be_bytes());
    header[2] = QR_BIT | (query_flags & (OPCODE_MASK | RD_BIT));
    // Only the low four bits fit the header; extended codes would need an OPT record.
    header[3] = RA_BIT | (rcode.low() & 0x0F);
    header
}

/// Used by the cache tests as well: builders of queries and replies.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as Question, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// A query message for `name`/`record_type` with `id`.
    pub(crate) fn query_message(id: u16, name: &str, record_type: RecordType) -> Message {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Question::query(
            Name::from_ascii(name).unwrap(),
            record_type,
        ));
        message
    }

    /// Query bytes for `name`/`record_type` with `id`, optionally with an EDNS payload size.
    pub(crate) fn query_bytes(
        id: u16,
        name: &str,
        record_type: RecordType,
        edns_payload: Option<u16>,
    ) -> Vec<u8> {
        let mut message = query_message(id, name, record_type);
        if let Some(payload) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    /// A response to a query for `name`/`record_type` carrying `answers`.
    pub(crate) fn reply(
        id: u16,
        name: &str,
        record_type: RecordType,
        answers: Vec<Record>,
    ) -> Message {
        let mut message = query_message(id, name, record_type);
        message.metadata.message_type = MessageType::Response;
        message.metadata.recursion_available = true;
        message.metadata.response_code = ResponseCode::NoError;
        message.add_answers(answers);
        message
    }

    pub(crate) fn a(name: &str, ttl: u32, address: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::from(address))),
        )
    }

    pub(crate) fn aaaa(name: &str, ttl: u32, address: Ipv6Addr) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::AAAA(AAAA(address)),
        )
    }

    pub(crate) fn cname(name: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::CNAME(CNAME(Name::from_ascii(target).unwrap())),
        )
    }

    pub(crate) fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        let zone = Name::from_ascii(zone).unwrap();
        Record::from_rdata(
            zone.clone(),
            ttl,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 3600, 600, 86400, minimum)),
        )
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query as Question, ResponseCode};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::testing::{a, cname, query_bytes, query_message, reply};
    use super::*;

    const MAX_NAME: usize = 253;

    fn query(name: &str, record_type: RecordType) -> Query {
        parse_query(&query_bytes(0x1234, name, record_type, None), MAX_NAME).unwrap()
    }

    #[test]
    fn parses_a_query_and_normalizes_the_name() {
        let bytes = query_bytes(0xbeef, "WWW.Example.COM.", RecordType::AAAA, None);
        let query = parse_query(&bytes, MAX_NAME).unwrap();
        assert_eq!(query.id, 0xbeef);
        assert_eq!(query.name, "www.example.com");
        assert_eq!(query.record_type, RecordType::AAAA);
        assert_eq!(query.class, DNSClass::IN);
        assert_eq!(query.udp_payload, 512);
        assert!(query.recursion_desired());
        assert!(!query.has_edns());
        // The echoed question keeps the client's letter case (0x20 randomisation).
        assert_eq!(
            query.question().unwrap().name().to_ascii(),
            "WWW.Example.COM."
        );
    }

    #[test]
    fn udp_payload_comes_from_edns_within_bounds() {
        let payload = |edns| {
            parse_query(
                &query_bytes(1, "example.com.", RecordType::A, edns),
                MAX_NAME,
            )
            .unwrap()
            .udp_payload
        };
        assert_eq!(payload(None), 512);
        assert_eq!(payload(Some(1232)), 1232);
        assert_eq!(payload(Some(100)), 512);
        assert_eq!(payload(Some(65000)), MAX_UDP_PAYLOAD);
    }

    #[test]
    fn garbage_and_short_input_are_malformed() {
        assert_eq!(
            parse_query(&[], MAX_NAME),
            Err(QueryError::Malformed { id: None })
        );
        assert_eq!(
            parse_query(&[0x12], MAX_NAME),
            Err(QueryError::Malformed { id: None })
        );
        assert_eq!(
            parse_query(&[0x12, 0x34, 0x01], MAX_NAME),
            Err(QueryError::Malformed { id: Some(0x1234) })
        );
        // A valid header announcing one question, followed by garbage.
        let mut bytes = query_bytes(0x4242, "example.com.", RecordType::A, None);
        bytes.truncate(HEADER_LEN + 3);
        assert_eq!(
            parse_query(&bytes, MAX_NAME),
            Err(QueryError::Malformed { id: Some(0x4242) })
        );
        let junk = [
            0xab, 0xcd, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(
            parse_query(&junk, MAX_NAME),
            Err(QueryError::Malformed { id: Some(0xabcd) })
        );
    }

    #[test]
    fn responses_and_other_opcodes_are_not_queries() {
        let mut response = query_message(7, "example.com.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert_eq!(
            parse_query(&response.to_vec().unwrap(), MAX_NAME),
            Err(QueryError::NotAQuery { id: 7 })
        );
        let mut notify = query_message(8, "example.com.", RecordType::A);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(
            parse_query(&notify.to_vec().unwrap(), MAX_NAME),
            Err(QueryError::NotAQuery { id: 8 })
        );
    }

    #[test]
    fn exactly_one_question_is_required() {
        let mut two = query_message(9, "example.com.", RecordType::A);
        two.add_query(Question::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            parse_query(&two.to_vec().unwrap(), MAX_NAME),
            Err(QueryError::QuestionCount { id: 9, count: 2 })
        );
        let none = Message::new(10, MessageType::Query, OpCode::Query);
        assert_eq!(
            parse_query(&none.to_vec().unwrap(), MAX_NAME),
            Err(QueryError::QuestionCount { id: 10, count: 0 })
        );
    }

    #[test]
    fn long_names_are_rejected() {
        let name = format!("{}.example.com.", "a".repeat(40));
        let bytes = query_bytes(11, &name, RecordType::A, None);
        let len = 40 + ".example.com".len();
        assert_eq!(parse_query(&bytes, len).unwrap().name.len(), len);
        assert_eq!(
            parse_query(&bytes, len - 1),
            Err(QueryError::NameTooLong { id: 11, len })
        );
    }

    #[test]
    fn query_errors_report_id_and_response_code() {
        assert_eq!(QueryError::Malformed { id: None }.id(), None);
        assert_eq!(QueryError::NameTooLong { id: 3, len: 300 }.id(), Some(3));
        assert_eq!(
            QueryError::QuestionCount { id: 1, count: 2 }.response_code(),
            ResponseCode::FormErr
        );
        assert_eq!(
            QueryError::NotAQuery { id: 1 }.response_code(),
            ResponseCode::NotImp
        );
    }

    #[test]
    fn error_response_echoes_id_question_and_flags() {
        let query = query("Example.com.", RecordType::A);
        let response = Message::from_vec(&error_response(&query, ResponseCode::NXDomain)).unwrap();
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert_eq!(response.metadata.op_code, OpCode::Query);
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        assert!(response.metadata.recursion_desired);
        assert!(response.metadata.recursion_available);
        assert!(!response.metadata.truncation);
        assert_eq!(response.queries.len(), 1);
        assert_eq!(response.queries[0].name().to_ascii(), "Example.com.");
        assert_eq!(response.queries[0].query_type(), RecordType::A);
        assert!(response.answers.is_empty());
        assert!(response.edns.is_none());
    }

    #[test]
    fn error_response_carries_opt_when_the_query_had_one() {
        let bytes = query_bytes(5, "example.com.", RecordType::A, Some(4000));
        let query = parse_query(&bytes, MAX_NAME).unwrap();
        assert!(query.has_edns());
        let response = Message::from_vec(&error_response(&query, ResponseCode::Refused)).unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        let edns = response.edns.expect("OPT echoed");
        assert_eq!(edns.max_payload(), ADVERTISED_UDP_PAYLOAD);
    }

    #[test]
    fn truncated_has_tc_and_the_question() {
        let query = query("example.com.", RecordType::AAAA);
        let response = Message::from_vec(&truncated(&query)).unwrap();
        assert!(response.metadata.truncation);
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert_eq!(response.queries.len(), 1);
        assert_eq!(response.queries[0].query_type(), RecordType::AAAA);
        assert!(response.answers.is_empty());
    }

    #[test]
    fn formerr_needs_an_id_and_never_answers_a_response() {
        assert_eq!(error_for(&[], ResponseCode::FormErr), None);
        assert_eq!(error_for(&[0x12], ResponseCode::FormErr), None);
        let formerr = error_for(&[0x12, 0x34], ResponseCode::FormErr).unwrap();
        assert_eq!(formerr.len(), HEADER_LEN);
        let parsed = Message::from_vec(&formerr).unwrap();
        assert_eq!(parsed.metadata.id, 0x1234);
        assert_eq!(parsed.metadata.message_type, MessageType::Response);
        assert_eq!(parsed.metadata.response_code, ResponseCode::FormErr);
        assert!(parsed.queries.is_empty());
        // RD and the opcode are copied from the offending header.
        let notimp = error_for(&[0, 1, (4 << 3) | RD_BIT], ResponseCode::NotImp).unwrap();
        let parsed = Message::from_vec(&notimp).unwrap();
        assert_eq!(parsed.metadata.op_code, OpCode::Notify);
        assert!(parsed.metadata.recursion_desired);
        assert_eq!(parsed.metadata.response_code, ResponseCode::NotImp);
        // A response is never answered.
        assert_eq!(
            error_for(&[0x12, 0x34, QR_BIT], ResponseCode::FormErr),
            None
        );
    }

    #[test]
    fn rewrite_sets_the_id_subtracts_age_and_caps_ttl() {
        let answer = reply(
            99,
            "www.example.com.",
            RecordType::A,
            vec![
                cname("www.example.com.", 7200, "cdn.example.net."),
                a("cdn.example.net.", 30, [192, 0, 2, 1]),
                a("cdn.example.net.", 5, [192, 0, 2, 2]),
            ],
        );
        let bytes = rewrite_reply(&answer, 0x0102, 3600, 10).unwrap();
        let rewritten = Message::from_vec(&bytes).unwrap();
        assert_eq!(rewritten.metadata.id, 0x0102);
        let ttls: Vec<u32> = rewritten.answers.iter().map(|record| record.ttl).collect();
        assert_eq!(ttls, vec![3600, 20, 0]);
    }

    #[test]
    fn ids_are_patched_in_place() {
        let bytes = query_bytes(0x1111, "example.com.", RecordType::A, None);
        let patched = with_id(&bytes, 0xabcd);
        assert_eq!(patched[..2], [0xab, 0xcd]);
        assert_eq!(patched[2..], bytes[2..]);
        let mut in_place = bytes.clone();
        set_id(&mut in_place, 0x0001);
        assert_eq!(Message::from_vec(&in_place).unwrap().metadata.id, 1);
        let mut short = [0x55];
        set_id(&mut short, 0xffff);
        assert_eq!(short, [0x55]);
    }
}
