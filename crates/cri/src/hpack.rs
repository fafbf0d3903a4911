//! Just enough HPACK (RFC 7541) to read a client's header blocks and write them again:
//! [`Decoder`] follows the client's dynamic table; [`encode`] writes fields as literals
//! that never add to the reader's table, so a re-encoded block needs no shared state.

use std::collections::VecDeque;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer in the header block is too large")]
    Overflow,
    #[error("table index {0} does not exist")]
    BadIndex(usize),
    #[error("a Huffman-coded string is invalid")]
    Huffman,
    #[error("a dynamic table size of {0} is above the limit")]
    TableSize(usize),
    #[error("the header list is larger than {0} bytes")]
    TooLarge(usize),
}

/// One header field. `sensitive`: sent "never indexed", and written again so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub sensitive: bool,
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The client's side of the compression context.
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the reading side: no table may grow beyond it.
    limit: usize,
    /// A decoded header list larger than this is refused (references into the dynamic
    /// table make a small block decode into a large list).
    list_max: usize,
}

impl Decoder {
    pub fn new(limit: usize, list_max: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
            list_max,
        }
    }

    /// The fields of one complete header block, the table updated as the block says.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        let mut i = 0;
        while i < block.len() {
            let first = block[i];
            let field = if first & 0x80 != 0 {
                let (name, value) = self.get(integer(block, &mut i, 7)?)?;
                Field {
                    name,
                    value,
                    sensitive: false,
                }
            } else if first & 0x40 != 0 {
                let field = self.literal(block, &mut i, 6, false)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if first & 0x20 != 0 {
                let size = integer(block, &mut i, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSize(size));
                }
                self.max = size;
                self.evict(0);
                continue;
            } else {
                self.literal(block, &mut i, 4, first & 0x10 != 0)?
            };
            list_size += field.name.len() + field.value.len() + 32;
            if list_size > self.list_max {
                return Err(HpackError::TooLarge(self.list_max));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn literal(
        &self,
        block: &[u8],
        i: &mut usize,
        prefix: u8,
        sensitive: bool,
    ) -> Result<Field, HpackError> {
        let index = integer(block, i, prefix)?;
        let name = match index {
            0 => string(block, i)?,
            n => self.get(n)?.0,
        };
        Ok(Field {
            name,
            value: string(block, i)?,
            sensitive,
        })
    }

    fn get(&self, index: usize) -> Result<(Vec<u8>, Vec<u8>), HpackError> {
        match index {
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self
                .table
                .get(index.wrapping_sub(62))
                .cloned()
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Drop the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// Write `fields` as a header block that leaves the reader's dynamic table alone: fields
/// of the static table by index, the rest as literals without indexing (never indexed
/// where they came so), names by static index where there is one, no Huffman coding.
pub fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        let exact = STATIC
            .iter()
            .position(|(n, v)| n.as_bytes() == f.name && v.as_bytes() == f.value);
        if let (Some(i), false) = (exact, f.sensitive) {
            put_integer(out, 0x80, 7, i + 1);
            continue;
        }
        let flags = if f.sensitive { 0x10 } else { 0x00 };
        match STATIC.iter().position(|(n, _)| n.as_bytes() == f.name) {
            Some(i) => put_integer(out, flags, 4, i + 1),
            None => {
                put_integer(out, flags, 4, 0);
                put_string(out, &f.name);
            }
        }
        put_string(out, &f.value);
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: `value` with an N-bit prefix, `flags` in the first byte's high bits.
fn put_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn integer(block: &[u8], i: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let max = (1usize << prefix) - 1;
    let first = *block.get(*i).ok_or(HpackError::Truncated)? as usize & max;
    *i += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    // Four continuation bytes reach 2^28: more than any table, block or string here.
    for shift in [0, 7, 14, 21] {
        let b = *block.get(*i).ok_or(HpackError::Truncated)?;
        *i += 1;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Overflow)
}

fn string(block: &[u8], i: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huffman = *block.get(*i).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, i, 7)?;
    let end = i
        .checked_add(len)
        .filter(|e| *e <= block.len())
        .ok_or(HpackError::Truncated)?;
    let raw = &block[*i..end];
    *i = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// Code lengths of RFC 7541 Appendix B, symbols 0–255 then EOS. The code is canonical
/// (codes of one length are consecutive, in symbol order, after the shorter ones), so
/// the lengths are the whole table.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;

/// Per code length: the first code, how many codes, and where their symbols start in
/// `symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    offset: [usize; 31],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|s| (HUFFMAN_LENGTHS[*s as usize], *s));
        let mut c = Canonical {
            first: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            symbols,
        };
        for len in HUFFMAN_LENGTHS {
            c.count[len as usize] += 1;
        }
        let (mut code, mut offset) = (0u32, 0usize);
        for len in 1..31 {
            code <<= 1;
            c.first[len] = code;
            c.offset[len] = offset;
            code += c.count[len];
            offset += c.count[len] as usize;
        }
        c
    })
}

fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, HpackError> {
    let table = canonical();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in bytes {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > 30 {
                return Err(HpackError::Huffman);
            }
            let k = code.wrapping_sub(table.first[len]);
            if code >= table.first[len] && k < table.count[len] {
                let symbol = table.symbols[table.offset[len] + k as usize];
                if symbol == EOS {
                    return Err(HpackError::Huffman);
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.clone()).unwrap(),
                    String::from_utf8(f.value.clone()).unwrap(),
                )
            })
            .collect()
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_rfc_request_examples_decode_with_and_without_huffman() {
        // RFC 7541 C.3 (literals) and C.4 (Huffman): three requests on one connection.
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(4096, 1 << 16);
            let first = p(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]);
            assert_eq!(pairs(&d.decode(&hex(blocks[0])).unwrap()), first);
            let mut second = first.clone();
            second.push(("cache-control".into(), "no-cache".into()));
            assert_eq!(pairs(&d.decode(&hex(blocks[1])).unwrap()), second);
            let third = p(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]);
            assert_eq!(pairs(&d.decode(&hex(blocks[2])).unwrap()), third);
            assert_eq!(d.size, 164, "RFC 7541 C.3.3 table size");
        }
    }

    #[test]
    fn every_byte_round_trips_through_the_huffman_code() {
        let t = canonical();
        let mut code_of = [(0u32, 0u32); 257];
        for len in 1..31 {
            for k in 0..t.count[len] {
                let symbol = t.symbols[t.offset[len] + k as usize];
                code_of[symbol as usize] = (t.first[len] + k, len as u32);
            }
        }
        // RFC 7541 Appendix B, first, a common and the last codes.
        assert_eq!(code_of[0], (0x1ff8, 13));
        assert_eq!(code_of[b'a' as usize], (0x3, 5));
        assert_eq!(code_of[255], (0x3ffffee, 26));
        assert_eq!(code_of[256], (0x3fff_ffff, 30));
        let input: Vec<u8> = (0..=255).rev().chain(0..=255).collect();
        let (mut bits, mut n, mut packed) = (0u64, 0u32, Vec::new());
        for b in &input {
            let (code, len) = code_of[*b as usize];
            bits = (bits << len) | u64::from(code);
            n += len;
            while n >= 8 {
                n -= 8;
                packed.push((bits >> n) as u8);
            }
        }
        if n > 0 {
            packed.push(((bits << (8 - n)) as u8) | (0xff >> n));
        }
        assert_eq!(huffman_decode(&packed).unwrap(), input);
    }

    #[test]
    fn a_small_table_evicts_the_oldest_entries() {
        // RFC 7541 C.5.2: the table limited to 256 bytes, the first entry evicted.
        let mut d = Decoder::new(256, 1 << 16);
        d.decode(&hex(
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
        ))
        .unwrap();
        assert_eq!(d.size, 222);
        let second = d.decode(&hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(second[0].value, b"307");
        assert_eq!(second[1].name, b"cache-control");
        assert_eq!(d.size, 222);
        assert_eq!(d.table.back().unwrap().0, b"cache-control");
        // A size update above the limit is refused.
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSize(4097))
        );
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_fields_and_touches_no_table() {
        let fields = vec![
            Field {
                name: b":method".to_vec(),
                value: b"POST".to_vec(),
                sensitive: false,
            },
            Field {
                name: b":authority".to_vec(),
                value: b"localhost".to_vec(),
                sensitive: false,
            },
            Field {
                name: b"grpc-timeout".to_vec(),
                value: vec![b'x'; 300],
                sensitive: false,
            },
            Field {
                name: b"authorization".to_vec(),
                value: b"secret".to_vec(),
                sensitive: true,
            },
        ];
        let mut block = Vec::new();
        encode(&fields, &mut block);
        let mut d = Decoder::new(4096, 1 << 16);
        assert_eq!(d.decode(&block).unwrap(), fields);
        assert!(d.table.is_empty());
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut d = Decoder::new(4096, 1 << 16);
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(d.decode(&[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(d.decode(&[0x41, 0x05, b'a']), Err(HpackError::Truncated));
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::Overflow)
        );
        // Huffman: EOS coded, padding of zeros, padding longer than 7 bits.
        assert_eq!(
            d.decode(&[0x41, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(HpackError::Huffman)
        );
        assert_eq!(d.decode(&[0x41, 0x81, 0x00]), Err(HpackError::Huffman));
        assert_eq!(
            d.decode(&[0x41, 0x82, 0x1f, 0xff]),
            Err(HpackError::Huffman)
        );
        // A list that references a large entry over and over is cut off.
        let mut d = Decoder::new(4096, 16 << 10);
        let mut literal = vec![0x40, 0x01, b'x'];
        put_integer(&mut literal, 0x00, 7, 3000);
        literal.extend(vec![b'v'; 3000]);
        literal.extend(std::iter::repeat_n(0xbe, 100));
        assert_eq!(d.decode(&literal), Err(HpackError::TooLarge(16 << 10)));
    }
}
