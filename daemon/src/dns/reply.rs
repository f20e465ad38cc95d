//! An upstream reply read straight from its bytes: whether it answers the question the proxy
//! asked, the addresses it gives for the query's name, its largest TTL and its response code.
//!
//! This is what an answer needs on its way to the container, and it is read here without
//! decoding the reply into a hickory `Message`: on a DNS thread woken by the reply, with cold
//! caches, that decoding and walking its records took 3.0–3.9 µs of every forwarded answer, this
//! reading takes 1.2–1.5 (the proxy's step timings, `docs/benchmarks.md`, "Ninth session"). The
//! reply is decoded with hickory once the answer has left, for the cache.
//!
//! These rules are the proxy's security boundary for DNS:
//! - a reply is accepted only if it carries the id the proxy chose, is a response, and asks
//!   exactly the question the container asked (name compared without regard to ASCII case, type
//!   and class), so an off-path host cannot inject answers;
//! - the addresses let through are only those of A and AAAA records (class IN) of the answer
//!   section whose owner is the query name or is reached from it through CNAMEs of the answer
//!   section (in any record order, at most [`MAX_CNAME_CHAIN`] hops). Records for any other name
//!   are ignored: an upstream, or whoever forged its reply, must not be able to smuggle an
//!   address for a name the container was never allowed to reach into an allowed answer;
//! - each address carries the smallest TTL along its chain; an address found more than once
//!   keeps its smallest TTL;
//! - a reply whose sections do not parse (a name running off the end, a bad label type, a
//!   compression loop, an address record of the wrong length) is refused as a whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use super::message::{HEADER_LEN, QR_BIT, Query};

/// How many CNAME hops are followed from the query name; stops loops and absurd chains.
pub const MAX_CNAME_CHAIN: usize = 16;
/// The longest name in wire form (RFC 1035).
const MAX_NAME_WIRE: usize = 255;
/// The shortest resource record: the root name, type, class, TTL and an empty data length.
const MIN_RECORD_LEN: usize = 11;
/// Record types and class read here.
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// What the proxy needs from an accepted reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyFacts {
    /// The response code (the header's four bits, extended by an OPT record's).
    pub rcode: ResponseCode,
    /// The addresses the reply gives for the query's name, each with its TTL (see the module
    /// docs), in the order of their first record.
    pub addresses: Vec<(IpAddr, u32)>,
    /// The largest TTL of any record of the answer, authority and additional sections (the OPT
    /// pseudo-record, whose TTL field holds flags, left out); 0 when there is none.
    pub max_ttl: u32,
}

/// Why an upstream reply is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The reply does not parse.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// The reply's id is not the one the proxy sent (a stray or forged datagram).
    #[error("reply id {got} does not match the query id {expected}")]
    WrongId {
        /// The id the proxy sent upstream.
        expected: u16,
        /// The id in the reply.
        got: u16,
    },
    /// The message is a query, not a response.
    #[error("the message is not a response")]
    NotAResponse,
    /// The reply answers another question than the one asked.
    #[error("the reply's question does not match the query")]
    QuestionMismatch,
}

/// Reads the upstream's `reply` to `query`, sent upstream with `upstream_id` (see the module
/// docs for what is checked and what is taken from it).
pub fn read_reply(query: &Query, upstream_id: u16, reply: &[u8]) -> Result<ReplyFacts, ReplyError> {
    let header = reply
        .get(..HEADER_LEN)
        .ok_or(ReplyError::Malformed("shorter than a DNS header"))?;
    let got = u16::from_be_bytes([header[0], header[1]]);
    if got != upstream_id {
        return Err(ReplyError::WrongId {
            expected: upstream_id,
            got,
        });
    }
    if header[2] & QR_BIT == 0 {
        return Err(ReplyError::NotAResponse);
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    if questions != 1 {
        return Err(ReplyError::QuestionMismatch);
    }

    let mut name = Vec::with_capacity(64);
    let mut at = read_name(reply, HEADER_LEN, &mut name)?;
    let fixed = reply
        .get(at..at + 4)
        .ok_or(ReplyError::Malformed("question cut short"))?;
    let asked_type = u16::from_be_bytes([fixed[0], fixed[1]]);
    let asked_class = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    if name != query.name_wire
        || RecordType::from(asked_type) != query.record_type
        || DNSClass::from(asked_class) != query.class
    {
        return Err(ReplyError::QuestionMismatch);
    }

    // The header's counts are the sender's word: room for what the bytes can hold at most.
    let mut records = Vec::with_capacity(answers.min(reply.len() / MIN_RECORD_LEN));
    let mut scratch = Vec::with_capacity(64);
    let mut max_ttl = 0;
    let mut extended_rcode = 0;
    for section in [Section::Answer, Section::Authority, Section::Additional] {
        let count = match section {
            Section::Answer => answers,
            Section::Authority => authorities,
            Section::Additional => additionals,
        };
        for _ in 0..count {
            let record = read_record(reply, at, &mut scratch)?;
            at = record.end;
            if record.rtype == TYPE_OPT && section == Section::Additional {
                // The OPT's TTL field: extended rcode, EDNS version, flags (RFC 6891).
                extended_rcode = record.ttl.to_be_bytes()[0];
                continue;
            }
            max_ttl = max_ttl.max(record.ttl);
            if section == Section::Answer && record.class == CLASS_IN {
                records.push(record);
            }
        }
    }
    Ok(ReplyFacts {
        rcode: ResponseCode::from(extended_rcode, header[3] & 0x0F),
        addresses: addresses_of(reply, &query.name_wire, &records)?,
        max_ttl,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record's fixed fields, and where its owner name and data are.
struct Record {
    /// Offset of the owner name.
    owner: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// The record data.
    data: std::ops::Range<usize>,
    /// Offset just past the record.
    end: usize,
}

/// The record at `at` of `message` (`scratch` holds its owner name meanwhile).
fn read_record(message: &[u8], at: usize, scratch: &mut Vec<u8>) -> Result<Record, ReplyError> {
    let fixed_at = read_name(message, at, scratch)?;
    let fixed = message
        .get(fixed_at..fixed_at + 10)
        .ok_or(ReplyError::Malformed("record cut short"))?;
    let data_len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let data = fixed_at + 10..fixed_at + 10 + data_len;
    if data.end > message.len() {
        return Err(ReplyError::Malformed("record data cut short"));
    }
    Ok(Record {
        owner: at,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        end: data.end,
        data,
    })
}

/// The addresses of `records` (the answer section's class IN records) for the name `asked`
/// (lowercase wire form): see the module docs.
fn addresses_of(
    message: &[u8],
    asked: &[u8],
    records: &[Record],
) -> Result<Vec<(IpAddr, u32)>, ReplyError> {
    let mut cnames: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::new();
    for record in records.iter().filter(|r| r.rtype == TYPE_CNAME) {
        let mut owner = Vec::new();
        read_name(message, record.owner, &mut owner)?;
        let mut target = Vec::new();
        let end = read_name(message, record.data.start, &mut target)?;
        if end != record.data.end {
            return Err(ReplyError::Malformed("CNAME data is not one name"));
        }
        cnames.push((owner, target, record.ttl));
    }

    // Name → smallest TTL of the CNAME chains reaching it. Each round follows one more hop from
    // what the previous rounds reached; a TTL only ever decreases, so loops settle. Without
    // CNAMEs (most answers) only the asked name is reached, and no map is built.
    let mut reached: HashMap<Vec<u8>, u32> = HashMap::new();
    if !cnames.is_empty() {
        reached.insert(asked.to_vec(), u32::MAX);
        for _ in 0..MAX_CNAME_CHAIN {
            if !follow_one_hop(&cnames, &mut reached) {
                break;
            }
        }
    }

    let mut found: Vec<(IpAddr, u32)> = Vec::new();
    let mut owner = Vec::with_capacity(64);
    for record in records {
        let data = message.get(record.data.clone()).unwrap_or_default();
        let address = match (record.rtype, data.len()) {
            (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::from([data[0], data[1], data[2], data[3]])),
            (TYPE_AAAA, 16) => {
                let mut octets = [0; 16];
                octets.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            (TYPE_A | TYPE_AAAA, _) => {
                return Err(ReplyError::Malformed("address record of the wrong length"));
            }
            _ => continue,
        };
        owner.clear();
        read_name(message, record.owner, &mut owner)?;
        let chain_ttl = if cnames.is_empty() {
            (owner == asked).then_some(u32::MAX)
        } else {
            reached.get(&owner).copied()
        };
        let Some(chain_ttl) = chain_ttl else {
            continue;
        };
        let ttl = record.ttl.min(chain_ttl);
        match found.iter_mut().find(|(known, _)| *known == address) {
            Some((_, known_ttl)) => *known_ttl = (*known_ttl).min(ttl),
            None => found.push((address, ttl)),
        }
    }
    Ok(found)
}

/// Follows every CNAME of `cnames` (owner, target, TTL) whose owner is in `reached` one hop,
/// keeping the smallest TTL of the chains that reach each name; whether anything changed.
fn follow_one_hop(cnames: &[(Vec<u8>, Vec<u8>, u32)], reached: &mut HashMap<Vec<u8>, u32>) -> bool {
    let hops: Vec<(&[u8], u32)> = cnames
        .iter()
        .filter_map(|(owner, target, ttl)| {
            reached
                .get(owner)
                .map(|chain_ttl| (target.as_slice(), (*chain_ttl).min(*ttl)))
        })
        .collect();
    let mut changed = false;
    for (target, ttl) in hops {
        match reached.get_mut(target) {
            Some(known) if ttl < *known => {
                *known = ttl;
                changed = true;
            }
            Some(_) => {}
            None => {
                reached.insert(target.to_vec(), ttl);
                changed = true;
            }
        }
    }
    changed
}

/// Reads the name at `at` of `message` into `out` in wire form with its letters lowercased,
/// following compression pointers (each must point before the label it replaces, so they cannot
/// loop); returns the offset just past the name where it starts (past its first pointer, if
/// any).
fn read_name(message: &[u8], mut at: usize, out: &mut Vec<u8>) -> Result<usize, ReplyError> {
    out.clear();
    let mut end = None;
    loop {
        let len = *message
            .get(at)
            .ok_or(ReplyError::Malformed("name cut short"))?;
        match len & 0xC0 {
            0x00 => {
                let label = message
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(ReplyError::Malformed("label cut short"))?;
                out.push(len);
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                if out.len() > MAX_NAME_WIRE {
                    return Err(ReplyError::Malformed("name longer than 255 bytes"));
                }
                at += 1 + usize::from(len);
                if len == 0 {
                    return Ok(end.unwrap_or(at));
                }
            }
            0xC0 => {
                let low = *message
                    .get(at + 1)
                    .ok_or(ReplyError::Malformed("pointer cut short"))?;
                let target = usize::from(u16::from_be_bytes([len & 0x3F, low]));
                if target >= at {
                    return Err(ReplyError::Malformed(
                        "compression pointer does not point back",
                    ));
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            // 0x40 and 0x80 are not defined label types.
            _ => return Err(ReplyError::Malformed("unknown label type")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, Message};
    use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

    use super::*;
    use crate::dns::message::parse_query;
    use crate::dns::message::testing::{a, aaaa, cname, query_bytes, query_message, reply, soa};

    const MAX_NAME: usize = 253;

    fn query(name: &str, record_type: RecordType) -> Query {
        parse_query(&query_bytes(0x1234, name, record_type, None), MAX_NAME).unwrap()
    }

    fn v4(address: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(address))
    }

    /// The addresses `answer` gives for `query` (its id is the query's).
    fn addresses(query: &Query, answer: &Message) -> Vec<(IpAddr, u32)> {
        read_reply(query, answer.metadata.id, &answer.to_vec().unwrap())
            .unwrap()
            .addresses
    }

    #[test]
    fn the_matching_reply_is_read() {
        let query = query("www.example.com.", RecordType::A);
        let mut answer = reply(
            77,
            "WWW.EXAMPLE.com.",
            RecordType::A,
            vec![a("www.example.com.", 60, [192, 0, 2, 1])],
        );
        answer.authorities.push(soa("example.com.", 900, 300));
        let facts = read_reply(&query, 77, &answer.to_vec().unwrap()).unwrap();
        assert_eq!(
            facts,
            ReplyFacts {
                rcode: ResponseCode::NoError,
                addresses: vec![(v4([192, 0, 2, 1]), 60)],
                max_ttl: 900,
            }
        );
    }

    #[test]
    fn mismatched_replies_are_refused() {
        let query = query("www.example.com.", RecordType::A);
        let good = reply(77, "www.example.com.", RecordType::A, vec![]);
        assert_eq!(
            read_reply(&query, 78, &good.to_vec().unwrap()),
            Err(ReplyError::WrongId {
                expected: 78,
                got: 77
            })
        );
        assert!(matches!(
            read_reply(&query, 77, &[0, 77, 0x80]),
            Err(ReplyError::Malformed(_))
        ));
        let not_response = query_message(77, "www.example.com.", RecordType::A);
        assert_eq!(
            read_reply(&query, 77, &not_response.to_vec().unwrap()),
            Err(ReplyError::NotAResponse)
        );
        let other_name = reply(77, "evil.example.com.", RecordType::A, vec![]);
        let other_type = reply(77, "www.example.com.", RecordType::AAAA, vec![]);
        let mut other_class = reply(77, "www.example.com.", RecordType::A, vec![]);
        other_class.queries[0].set_query_class(DNSClass::CH);
        let mut no_question = reply(77, "www.example.com.", RecordType::A, vec![]);
        no_question.queries.clear();
        let longer = reply(77, "www.example.com.evil.", RecordType::A, vec![]);
        let shorter = reply(77, "example.com.", RecordType::A, vec![]);
        for wrong in [
            other_name,
            other_type,
            other_class,
            no_question,
            longer,
            shorter,
        ] {
            assert_eq!(
                read_reply(&query, 77, &wrong.to_vec().unwrap()),
                Err(ReplyError::QuestionMismatch)
            );
        }
    }

    #[test]
    fn addresses_follow_a_cname_chain_with_the_smallest_ttl() {
        let query = query("a.example.com.", RecordType::A);
        // Out of order on purpose: the A record comes first, then the chain backwards.
        let answer = reply(
            1,
            "a.example.com.",
            RecordType::A,
            vec![
                a("c.example.net.", 300, [192, 0, 2, 7]),
                cname("b.example.org.", 30, "c.example.net."),
                cname("A.Example.com.", 120, "b.example.org."),
            ],
        );
        assert_eq!(addresses(&query, &answer), vec![(v4([192, 0, 2, 7]), 30)]);
    }

    #[test]
    fn addresses_of_unrelated_names_are_ignored() {
        let query = query("www.example.com.", RecordType::A);
        let answer = reply(
            1,
            "www.example.com.",
            RecordType::A,
            vec![
                a("www.example.com.", 60, [192, 0, 2, 1]),
                a("evil.example.net.", 60, [203, 0, 113, 66]),
                // A CNAME from an unrelated name does not make its target reachable.
                cname("other.example.net.", 60, "target.example.net."),
                a("target.example.net.", 60, [203, 0, 113, 67]),
                // Nor do a subdomain or a parent of the query name.
                a("x.www.example.com.", 60, [203, 0, 113, 68]),
                a("example.com.", 60, [203, 0, 113, 69]),
            ],
        );
        assert_eq!(addresses(&query, &answer), vec![(v4([192, 0, 2, 1]), 60)]);
    }

    #[test]
    fn addresses_in_other_sections_are_ignored() {
        let query = query("www.example.com.", RecordType::A);
        let mut answer = reply(1, "www.example.com.", RecordType::A, vec![]);
        answer
            .authorities
            .push(a("www.example.com.", 60, [203, 0, 113, 70]));
        answer
            .additionals
            .push(a("www.example.com.", 60, [203, 0, 113, 71]));
        assert!(addresses(&query, &answer).is_empty());
    }

    #[test]
    fn addresses_survive_cname_loops() {
        let query = query("a.example.com.", RecordType::A);
        let answer = reply(
            1,
            "a.example.com.",
            RecordType::A,
            vec![
                cname("a.example.com.", 50, "b.example.com."),
                cname("b.example.com.", 40, "a.example.com."),
                a("b.example.com.", 100, [192, 0, 2, 2]),
            ],
        );
        // The loop is followed once around, so `a` is reached again with TTL 40, and `b`'s
        // address gets the smallest TTL on the way there.
        assert_eq!(addresses(&query, &answer), vec![(v4([192, 0, 2, 2]), 40)]);
    }

    #[test]
    fn cname_chains_are_bounded() {
        let hop = |index: usize| format!("n{index}.example.com.");
        let chain = |hops: usize| {
            let mut records: Vec<_> = (0..hops).map(|i| cname(&hop(i), 60, &hop(i + 1))).collect();
            records.push(a(&hop(hops), 60, [192, 0, 2, 9]));
            reply(1, &hop(0), RecordType::A, records)
        };
        let query = query(&hop(0), RecordType::A);
        assert_eq!(
            addresses(&query, &chain(MAX_CNAME_CHAIN)),
            vec![(v4([192, 0, 2, 9]), 60)]
        );
        assert!(addresses(&query, &chain(MAX_CNAME_CHAIN + 1)).is_empty());
    }

    #[test]
    fn addresses_include_aaaa_and_deduplicate_with_the_smaller_ttl() {
        let query = query("www.example.com.", RecordType::AAAA);
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let answer = reply(
            1,
            "www.example.com.",
            RecordType::AAAA,
            vec![
                aaaa("www.example.com.", 90, v6),
                cname("www.example.com.", 300, "cdn.example.net."),
                aaaa("cdn.example.net.", 600, v6),
                aaaa("www.example.com.", 120, v6),
            ],
        );
        assert_eq!(addresses(&query, &answer), vec![(IpAddr::V6(v6), 90)]);
    }

    #[test]
    fn addresses_ignore_other_classes() {
        let query = query("www.example.com.", RecordType::A);
        let mut chaos = a("www.example.com.", 60, [192, 0, 2, 3]);
        chaos.dns_class = DNSClass::CH;
        let answer = reply(1, "www.example.com.", RecordType::A, vec![chaos]);
        assert!(addresses(&query, &answer).is_empty());
    }

    #[test]
    fn the_largest_ttl_counts_every_section_but_the_opt() {
        let query = query("www.example.com.", RecordType::A);
        let mut answer = reply(
            99,
            "www.example.com.",
            RecordType::A,
            vec![
                cname("www.example.com.", 300, "cdn.example.net."),
                a("cdn.example.net.", 30, [192, 0, 2, 1]),
            ],
        );
        // The OPT's TTL field holds flags (DO set: 0x8000), not a TTL.
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        answer.set_edns(edns);
        let read = |answer: &Message| {
            read_reply(&query, 99, &answer.to_vec().unwrap())
                .unwrap()
                .max_ttl
        };
        assert_eq!(read(&answer), 300);
        answer
            .authorities
            .push(a("ns.example.net.", 7200, [192, 0, 2, 53]));
        assert_eq!(read(&answer), 7200, "authority records count too");
        answer
            .additionals
            .push(a("ns2.example.net.", 86400, [192, 0, 2, 54]));
        assert_eq!(read(&answer), 86400, "additional records count too");
    }

    #[test]
    fn the_response_code_includes_the_extended_bits() {
        let query = query("www.example.com.", RecordType::A);
        let mut answer = reply(5, "www.example.com.", RecordType::A, vec![]);
        for (code, edns) in [
            (ResponseCode::NXDomain, false),
            (ResponseCode::BADVERS, true),
        ] {
            // Codes above 15 need the OPT's extended bits.
            if edns {
                answer.set_edns(Edns::new());
            }
            answer.metadata.response_code = code;
            let bytes = answer.to_vec().unwrap();
            let read = read_reply(&query, 5, &bytes).unwrap().rcode;
            assert_eq!(
                read,
                Message::from_vec(&bytes).unwrap().metadata.response_code
            );
            assert_eq!(u16::from(read), u16::from(code));
        }
    }

    /// Where the answer section of a [`handmade`] reply starts.
    const HANDMADE_RECORDS: usize = 12 + 21;

    /// A reply whose answer section is `records`, hand-written: 1 question (`www.example.com`,
    /// A, IN) at offset 12, so a pointer to it is `0xC00C`.
    fn handmade(records: &[&[u8]]) -> Vec<u8> {
        let mut wire = vec![0, 7, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        let answers = u16::try_from(records.len()).unwrap();
        wire[6..8].copy_from_slice(&answers.to_be_bytes());
        wire.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        for record in records {
            wire.extend_from_slice(record);
        }
        wire
    }

    #[test]
    fn broken_sections_are_refused() {
        let query = query("www.example.com.", RecordType::A);
        let a_record: &[u8] = &[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        let good = handmade(&[a_record]);
        assert_eq!(
            read_reply(&query, 7, &good).unwrap().addresses,
            vec![(v4([192, 0, 2, 1]), 60)]
        );
        // Cut anywhere: refused, never read past the end.
        for end in 0..good.len() {
            assert!(read_reply(&query, 7, &good[..end]).is_err(), "cut at {end}");
        }
        let refused = |records: &[&[u8]]| read_reply(&query, 7, &handmade(records));
        // An A record of 5 bytes.
        let long_a: &[u8] = &[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 192, 0, 2, 1, 9];
        assert!(matches!(refused(&[long_a]), Err(ReplyError::Malformed(_))));
        // A pointer to itself, and one pointing forward: no loop, refused.
        let to_itself: &[u8] = &[0xC0, 41, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert!(matches!(
            refused(&[to_itself]),
            Err(ReplyError::Malformed(_))
        ));
        let forward: &[u8] = &[0xC0, 60, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        assert!(matches!(refused(&[forward]), Err(ReplyError::Malformed(_))));
        // Label types 0x40 and 0x80.
        for kind in [0x41, 0x81] {
            let odd: &[u8] = &[kind, b'x', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
            assert!(matches!(refused(&[odd]), Err(ReplyError::Malformed(_))));
        }
        // A CNAME whose data holds more than its name.
        let cname_extra: &[u8] = &[0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 60, 0, 3, 0xC0, 0x0C, 0];
        assert!(matches!(
            refused(&[cname_extra]),
            Err(ReplyError::Malformed(_))
        ));
        // Names built from pointers to ever longer names, kept in a TXT record's data, and an A
        // record owned by the last one: 3 labels of 63 (193 bytes) are a name, 4 (257) are not.
        let long_owner = |labels: usize| {
            let mut names = Vec::new();
            let mut last: Option<u16> = None;
            for _ in 0..labels {
                let here = HANDMADE_RECORDS + 12 + names.len();
                names.push(63);
                names.extend_from_slice(&[b'a'; 63]);
                match last {
                    None => names.push(0),
                    Some(previous) => {
                        names.extend_from_slice(&(0xC000_u16 | previous).to_be_bytes());
                    }
                }
                last = Some(u16::try_from(here).unwrap());
            }
            let mut txt: Vec<u8> = vec![0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0, 60];
            txt.extend_from_slice(&u16::try_from(names.len()).unwrap().to_be_bytes());
            txt.extend_from_slice(&names);
            let mut owned: Vec<u8> = (0xC000_u16 | last.unwrap()).to_be_bytes().to_vec();
            owned.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            read_reply(&query, 7, &handmade(&[&txt, &owned]))
        };
        assert_eq!(long_owner(3).unwrap().addresses, vec![]);
        assert_eq!(
            long_owner(4),
            Err(ReplyError::Malformed("name longer than 255 bytes"))
        );
    }

    /// The addresses as hickory's decoding gives them, by the rules of the module docs: what
    /// [`read_reply`] is compared with on random replies.
    fn hickory_addresses(asked: &Name, reply: &Message) -> Vec<(IpAddr, u32)> {
        let key = |name: &Name| name.to_lowercase().to_ascii();
        let cnames: Vec<(String, String, u32)> = reply
            .answers
            .iter()
            .filter(|record| record.dns_class == DNSClass::IN)
            .filter_map(|record| match &record.data {
                RData::CNAME(target) => Some((key(&record.name), key(&target.0), record.ttl)),
                _ => None,
            })
            .collect();
        let mut reached: HashMap<String, u32> = HashMap::from([(key(asked), u32::MAX)]);
        for _ in 0..MAX_CNAME_CHAIN {
            let hops: Vec<(String, u32)> = cnames
                .iter()
                .filter_map(|(owner, target, ttl)| {
                    reached
                        .get(owner)
                        .map(|chain_ttl| (target.clone(), (*chain_ttl).min(*ttl)))
                })
                .collect();
            let mut changed = false;
            for (target, ttl) in hops {
                let entry = reached.entry(target).or_insert_with(|| {
                    changed = true;
                    ttl
                });
                if ttl < *entry {
                    *entry = ttl;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut found: Vec<(IpAddr, u32)> = Vec::new();
        for record in reply
            .answers
            .iter()
            .filter(|record| record.dns_class == DNSClass::IN)
        {
            let address = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            let Some(chain_ttl) = reached.get(&key(&record.name)) else {
                continue;
            };
            let ttl = record.ttl.min(*chain_ttl);
            match found.iter_mut().find(|(known, _)| *known == address) {
                Some((_, known_ttl)) => *known_ttl = (*known_ttl).min(ttl),
                None => found.push((address, ttl)),
            }
        }
        found
    }

    /// xorshift64: a fixed sequence, so a failure reproduces.
    struct Random(u64);

    impl Random {
        /// The next number below `n`.
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            usize::try_from(self.0 % u64::try_from(n).unwrap()).unwrap()
        }
    }

    #[test]
    fn random_replies_give_the_addresses_hickory_reads() {
        let names = [
            "q.example.com.",
            "Q.EXAMPLE.com.",
            "a.example.com.",
            "b.example.net.",
            "x.q.example.com.",
            "example.com.",
            "c.example.org.",
        ];
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        let query = query("q.example.com.", RecordType::A);
        let asked = Name::from_ascii("q.example.com.").unwrap();
        let mut with_addresses = 0;
        for round in 0..20_000 {
            let mut records = Vec::new();
            for _ in 0..random.below(7) {
                let owner = names[random.below(names.len())];
                let ttl = u32::try_from(random.below(5)).unwrap() * 100 + 1;
                let host = u8::try_from(random.below(4)).unwrap();
                let mut record = match random.below(4) {
                    0 | 1 => a(owner, ttl, [192, 0, 2, host]),
                    2 => aaaa(
                        owner,
                        ttl,
                        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host.into()),
                    ),
                    _ => cname(owner, ttl, names[random.below(names.len())]),
                };
                if random.below(10) == 0 {
                    record.dns_class = DNSClass::CH;
                }
                records.push(record);
            }
            let answer = reply(3, "q.example.com.", RecordType::A, records);
            let expected = hickory_addresses(&asked, &answer);
            let read = read_reply(&query, 3, &answer.to_vec().unwrap()).unwrap();
            assert_eq!(read.addresses, expected, "round {round}: {answer:?}");
            with_addresses += usize::from(!expected.is_empty());
        }
        // The generator reaches both outcomes often.
        assert!(
            (5_000..15_000).contains(&with_addresses),
            "{with_addresses}"
        );
    }
}
