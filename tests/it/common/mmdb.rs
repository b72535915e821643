//! A small MaxMind-format (MMDB v2) country database written by the test itself:
//! an IPv4 search tree with 24-bit records, a data section of
//! `{"country": {"iso_code": CC}}` maps, and the metadata the readers require.

/// `(network, prefix length, country code)` rows as an MMDB file's bytes.
pub(crate) fn country_database(rows: &[(std::net::Ipv4Addr, u8, &str)]) -> Vec<u8> {
    #[derive(Clone, Copy)]
    enum Record {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for (network, len, code) in rows {
        let offset = data.len();
        data.push(0xE1);
        string(&mut data, "country");
        data.push(0xE1);
        string(&mut data, "iso_code");
        string(&mut data, code);
        let bits = u32::from(*network);
        let mut node = 0;
        for depth in 0..*len {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][bit] = Record::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(next) => next,
                    _ => {
                        nodes.push([Record::Empty; 2]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(next);
                        next
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(offset) => count + 16 + offset,
            } as u32;
            out.extend_from_slice(&value.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    out.push(0xE0 | 9);
    string(&mut out, "node_count");
    unsigned(&mut out, 6, count as u64);
    string(&mut out, "record_size");
    unsigned(&mut out, 5, 24);
    string(&mut out, "ip_version");
    unsigned(&mut out, 5, 4);
    string(&mut out, "database_type");
    string(&mut out, "licgate-test-Country");
    string(&mut out, "languages");
    out.extend_from_slice(&[0x00, 0x04]); // an empty array (extended type 11)
    string(&mut out, "binary_format_major_version");
    unsigned(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    unsigned(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[0x08, 0x02]); // uint64 (extended type 9), 8 bytes
    out.extend_from_slice(&1_700_000_000u64.to_be_bytes());
    string(&mut out, "description");
    out.push(0xE0); // an empty map
    out
}

fn string(out: &mut Vec<u8>, text: &str) {
    assert!(text.len() < 29);
    out.push(0x40 | text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// An unsigned integer of MMDB type `kind` (5: uint16, 6: uint32) in 4 bytes or fewer.
fn unsigned(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let used = &bytes[skip..];
    out.push((kind << 5) | used.len() as u8);
    out.extend_from_slice(used);
}
