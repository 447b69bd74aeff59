//! The stream gate: a push-based reader and verifier of raw `zfs send` streams.
//!
//! `s3put --zfs-stream` feeds every byte through a [`StreamGate`] before it is compressed
//! or uploaded, and commits only when [`StreamGate::finish`] says the stream is whole: every
//! record parsed, every END record's fletcher-4 equal to the checksum of its substream, the
//! last END seen, and nothing after it. End of input alone cannot tell a finished `zfs send`
//! from a killed one; the END record can.
//!
//! Format (OpenZFS `include/sys/zfs_ioctl.h`, `dmu_replay_record_t`): records of 312 bytes
//! (u32 type, u32 payload length, a 304-byte union), each followed by a payload whose length
//! follows from the record type. Numbers are little-endian here; byte-swapped (big-endian)
//! streams are refused. OpenZFS 2.x also puts a running fletcher-4 in the last 32 bytes of
//! every record but BEGIN; it is checked where non-zero (zfs-fuse leaves it zero).

use std::fmt;

/// Size of one `dmu_replay_record_t`.
pub const RECORD_LEN: usize = 312;
/// `DMU_BACKUP_MAGIC`, at byte 8 of every BEGIN record.
pub const MAGIC: u64 = 0x2_F5BA_CBAC;
/// Where the per-record checksum (`drr_checksum.drr_checksum`) starts.
const RECORD_CKSUM_AT: usize = RECORD_LEN - 32;

// Record types (`drr_type`).
const BEGIN: u32 = 0;
const OBJECT: u32 = 1;
const FREEOBJECTS: u32 = 2;
const WRITE: u32 = 3;
const FREE: u32 = 4;
const END: u32 = 5;
const WRITE_BYREF: u32 = 6;
const SPILL: u32 = 7;
const WRITE_EMBEDDED: u32 = 8;
const OBJECT_RANGE: u32 = 9;
const REDACT: u32 = 10;

// Stream header types (low two bits of `drr_versioninfo`).
const SUBSTREAM: u64 = 1;
const COMPOUNDSTREAM: u64 = 2;
/// `DMU_BACKUP_FEATURE_DEDUP`, in the feature bits (`drr_versioninfo >> 2`).
const FEATURE_DEDUP: u64 = 1;
/// `DMU_BACKUP_FEATURE_RAW`: a raw (`zfs send -w`) stream, encrypted blocks as stored.
const FEATURE_RAW: u64 = 1 << 24;

/// Largest data payload a real stream carries (`SPA_MAXBLOCKSIZE`); a bigger length means
/// a corrupt header, which is better reported at once than as a cut stream much later.
const MAX_DATA_PAYLOAD: u64 = 16 << 20;
/// Generous bound for the BEGIN nvlist (a `-R` stream of many snapshots has a big one).
const MAX_BEGIN_PAYLOAD: u64 = 1 << 30;

fn type_name(t: u32) -> &'static str {
    match t {
        BEGIN => "BEGIN",
        OBJECT => "OBJECT",
        FREEOBJECTS => "FREEOBJECTS",
        WRITE => "WRITE",
        FREE => "FREE",
        END => "END",
        WRITE_BYREF => "WRITE_BYREF",
        SPILL => "SPILL",
        WRITE_EMBEDDED => "WRITE_EMBEDDED",
        OBJECT_RANGE => "OBJECT_RANGE",
        REDACT => "REDACT",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------
// fletcher-4

/// Fletcher-4 as ZFS computes it: four u64 sums over little-endian u32 words, wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fletcher4 {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
}

impl Fletcher4 {
    pub fn words(self) -> [u64; 4] {
        [self.a, self.b, self.c, self.d]
    }

    /// Add whole u32 words; `data.len()` must be a multiple of 4 (a tail is ignored).
    pub fn update_words(&mut self, data: &[u8]) {
        // Four interleaved lanes have no dependency on each other, so the compiler turns
        // the loop into vector adds; short inputs are not worth the combine step.
        const LANE_BLOCK: usize = 16;
        let bulk = if data.len() >= 256 { data.len() / LANE_BLOCK * LANE_BLOCK } else { 0 };
        if bulk > 0 {
            let block = lanes(&data[..bulk]);
            self.append(block, (bulk / 4) as u64);
        }
        let mut s = *self;
        for w in data[bulk..].chunks_exact(4) {
            let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64;
            s.a = s.a.wrapping_add(w);
            s.b = s.b.wrapping_add(s.a);
            s.c = s.c.wrapping_add(s.b);
            s.d = s.d.wrapping_add(s.c);
        }
        *self = s;
    }

    /// Append the checksum `block` of `n` words computed from zero (as OpenZFS's
    /// `fletcher_4_incremental_combine`). The binomial factors are exact in u128, then
    /// taken mod 2^64 like every other sum here.
    fn append(&mut self, block: Fletcher4, n: u64) {
        let n128 = n as u128;
        let c1 = n;
        let c2 = (n128 * (n128 + 1) / 2) as u64;
        let c3 = (n128 * (n128 + 1) * (n128 + 2) / 6) as u64;
        let s = *self;
        self.d =
            s.d.wrapping_add(block.d)
                .wrapping_add(c1.wrapping_mul(s.c))
                .wrapping_add(c2.wrapping_mul(s.b))
                .wrapping_add(c3.wrapping_mul(s.a));
        self.c = s.c.wrapping_add(block.c).wrapping_add(c1.wrapping_mul(s.b)).wrapping_add(c2.wrapping_mul(s.a));
        self.b = s.b.wrapping_add(block.b).wrapping_add(c1.wrapping_mul(s.a));
        self.a = s.a.wrapping_add(block.a);
    }
}

/// Fletcher-4 from zero of `data` (a multiple of 16 bytes) in four lanes, word `i` in lane
/// `i % 4`, then folded back into the sequential result (OpenZFS `fletcher_4_avx2_fini`).
fn lanes(data: &[u8]) -> Fletcher4 {
    let (mut a, mut b, mut c, mut d) = ([0u64; 4], [0u64; 4], [0u64; 4], [0u64; 4]);
    for chunk in data.chunks_exact(16) {
        for j in 0..4 {
            let w = u32::from_le_bytes([chunk[4 * j], chunk[4 * j + 1], chunk[4 * j + 2], chunk[4 * j + 3]]) as u64;
            a[j] = a[j].wrapping_add(w);
            b[j] = b[j].wrapping_add(a[j]);
            c[j] = c[j].wrapping_add(b[j]);
            d[j] = d[j].wrapping_add(c[j]);
        }
    }
    // Word at distance k from the end of its lane is at distance 4k - j overall; these
    // are the coefficients of k, k(k+1)/2, k(k+1)(k+2)/6 in the overall sums.
    let m = |x: u64, k: u64| x.wrapping_mul(k);
    let sum = |v: [u64; 4], k: [u64; 4]| {
        m(v[0], k[0]).wrapping_add(m(v[1], k[1])).wrapping_add(m(v[2], k[2])).wrapping_add(m(v[3], k[3]))
    };
    let neg = |x: u64| 0u64.wrapping_sub(x);
    let fa = sum(a, [1, 1, 1, 1]);
    let fb = sum(b, [4, 4, 4, 4]).wrapping_sub(sum(a, [0, 1, 2, 3]));
    let fc = sum(c, [16, 16, 16, 16]).wrapping_sub(sum(b, [6, 10, 14, 18])).wrapping_add(sum(a, [0, 0, 1, 3]));
    let fd = sum(d, [64, 64, 64, 64])
        .wrapping_sub(sum(c, [48, 64, 80, 96]))
        .wrapping_add(sum(b, [4, 10, 20, 34]))
        .wrapping_add(neg(a[3]));
    Fletcher4 { a: fa, b: fb, c: fc, d: fd }
}

/// Fletcher-4 over a byte stream cut anywhere: keeps the bytes of a partial word.
#[derive(Clone, Copy, Debug, Default)]
struct StreamSum {
    sum: Fletcher4,
    tail: [u8; 4],
    tail_len: usize,
}

impl StreamSum {
    fn update(&mut self, mut data: &[u8]) {
        if self.tail_len > 0 {
            let n = (4 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < 4 {
                return;
            }
            let tail = self.tail;
            self.sum.update_words(&tail);
            self.tail_len = 0;
        }
        let whole = data.len() / 4 * 4;
        self.sum.update_words(&data[..whole]);
        let rest = &data[whole..];
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The checksum so far; a partial last word counts as zero-padded. Payloads are
    /// multiples of 4 bytes in every stream we know, so this does not arise in practice.
    fn value(&self) -> [u64; 4] {
        let mut s = *self;
        if s.tail_len > 0 {
            let mut w = [0u8; 4];
            w[..s.tail_len].copy_from_slice(&s.tail[..s.tail_len]);
            s.sum.update_words(&w);
        }
        s.sum.words()
    }
}

// ---------------------------------------------------------------------------------------
// Errors and results

/// Why a stream was refused. The exit code in parentheses is the one `lib/cli` maps the
/// kind to (`From<StreamError> for Failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamErrorKind {
    /// No bytes at all (67: nothing committed; the producer most likely failed).
    Empty,
    /// Input ended before the last END record (67: the stream was cut).
    Cut,
    /// Bytes that are not a valid stream, a checksum mismatch, trailing data (65).
    Corrupt,
    /// A stream we can parse but do not accept, e.g. byte-swapped (65).
    Unsupported,
    /// A valid stream of another snapshot than `--expect-guid`/`--expect-from` say (65).
    WrongSnapshot,
    /// A stream that is not raw where a raw one was required (`--expect-raw`, a key with
    /// `send=w`): an encrypted dataset's data would be stored decrypted (65).
    NotRaw,
}

/// A refused stream: what and where, in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub kind: StreamErrorKind,
    pub message: String,
}

impl StreamError {
    fn new(kind: StreamErrorKind, message: impl Into<String>) -> Self {
        StreamError { kind, message: message.into() }
    }

    fn corrupt(message: impl Into<String>) -> Self {
        StreamError::new(StreamErrorKind::Corrupt, message)
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StreamError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Full,
    Incremental,
    /// `zfs send -R` / `-I`: a header, then one substream per snapshot.
    Compound,
}

impl StreamKind {
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Full => "full",
            StreamKind::Incremental => "incremental",
            StreamKind::Compound => "compound",
        }
    }
}

/// One BEGIN…END stream of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Substream {
    pub toguid: u64,
    /// 0 for a full stream.
    pub fromguid: u64,
    pub toname: String,
    pub dedup: bool,
    /// A raw (`zfs send -w`) stream: the blocks are as stored, encrypted ones encrypted.
    pub raw: bool,
    /// Bytes from its BEGIN through its END record.
    pub bytes: u64,
    pub records: u64,
}

/// What a verified stream was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub bytes: u64,
    pub kind: StreamKind,
    /// The snapshot sent; for a compound stream, that of its last substream named like
    /// its header (with -R, children's substreams come after it).
    pub toguid: u64,
    /// 0 for a full stream; for a compound stream, that of its first substream.
    pub fromguid: u64,
    /// The BEGIN record's name (for a compound stream, the header's).
    pub toname: String,
    /// Every substream in order (one for a plain stream).
    pub substreams: Vec<Substream>,
    pub dedup: bool,
    /// Every substream is raw.
    pub raw: bool,
    pub records: u64,
}

impl StreamSummary {
    /// For JSON output; guids as decimal strings, since they exceed 2^53.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "bytes": self.bytes,
            "kind": self.kind.name(),
            "toguid": self.toguid.to_string(),
            "fromguid": self.fromguid.to_string(),
            "toname": self.toname,
            "records": self.records,
            "dedup": self.dedup,
            "raw": self.raw,
        });
        if self.kind == StreamKind::Compound {
            v["substreams"] = self
                .substreams
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "toguid": s.toguid.to_string(),
                        "fromguid": s.fromguid.to_string(),
                        "toname": s.toname,
                        "bytes": s.bytes,
                    })
                })
                .collect();
        }
        v
    }
}

// ---------------------------------------------------------------------------------------
// The gate

/// Where in the stream's grammar we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the first BEGIN.
    Start,
    /// Inside a substream, after its BEGIN.
    Sub,
    /// After a compound header's BEGIN: its END comes next.
    CompoundHeader,
    /// Between substreams of a compound stream: a BEGIN or the final END.
    Between,
    /// After the last END: nothing may follow.
    Done,
}

/// The BEGIN record of the stream or substream being read.
#[derive(Clone, Debug)]
struct Begin {
    toguid: u64,
    fromguid: u64,
    toname: String,
    dedup: bool,
    raw: bool,
    at: u64,
    records: u64,
}

/// Push-based verifier: `feed` any chunks, then `finish`. After an error every further
/// call returns the same error. Cloning is cheap (a few hundred bytes), e.g. to ask what
/// the verdict would be if the stream ended here.
#[derive(Clone)]
pub struct StreamGate {
    expect_guid: Option<u64>,
    expect_from: Option<u64>,
    expect_raw: bool,
    offset: u64,
    header: [u8; RECORD_LEN],
    header_len: usize,
    payload_left: u64,
    sum: StreamSum,
    phase: Phase,
    compound: Option<Begin>,
    current: Option<Begin>,
    substreams: Vec<Substream>,
    records: u64,
    failed: Option<StreamError>,
}

impl Default for StreamGate {
    fn default() -> Self {
        StreamGate::new()
    }
}

impl StreamGate {
    pub fn new() -> Self {
        StreamGate {
            expect_guid: None,
            expect_from: None,
            expect_raw: false,
            offset: 0,
            header: [0; RECORD_LEN],
            header_len: 0,
            payload_left: 0,
            sum: StreamSum::default(),
            phase: Phase::Start,
            compound: None,
            current: None,
            substreams: Vec::new(),
            records: 0,
            failed: None,
        }
    }

    /// Also require the snapshot's guid (`toguid`) and, if given, its origin (`fromguid`;
    /// 0 means a full stream). Checked at the BEGIN record, so a wrong snapshot is refused
    /// before its data flows (for a compound stream, at the end).
    pub fn expecting(guid: Option<u64>, from: Option<u64>) -> Self {
        StreamGate { expect_guid: guid, expect_from: from, ..StreamGate::new() }
    }

    /// Also require every substream to be raw (`zfs send -w`), checked at its BEGIN, so
    /// that decrypted data of an encrypted dataset is refused before any of it flows.
    pub fn requiring_raw(self, raw: bool) -> Self {
        StreamGate { expect_raw: raw, ..self }
    }

    /// Bytes accepted so far.
    pub fn bytes(&self) -> u64 {
        self.offset
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            if self.phase == Phase::Done {
                return Err(StreamError::corrupt(format!("data after the final END record (at byte {})", self.offset)));
            }
            if self.payload_left > 0 {
                let n = (self.payload_left.min(data.len() as u64)) as usize;
                self.sum.update(&data[..n]);
                self.offset += n as u64;
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (RECORD_LEN - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            let before = self.header_len;
            self.header_len += n;
            self.offset += n as u64;
            data = &data[n..];
            // Say "not a stream" as soon as 16 bytes show it, even if fewer than 312 come.
            if self.phase == Phase::Start && before < 16 && self.header_len >= 16 {
                self.check_magic()?;
            }
            if self.header_len == RECORD_LEN {
                self.header_len = 0;
                self.record()?;
            }
        }
        Ok(())
    }

    fn check_magic(&self) -> Result<(), StreamError> {
        let magic = u64_at(&self.header, 8);
        if magic == MAGIC.swap_bytes() {
            return Err(StreamError::new(
                StreamErrorKind::Unsupported,
                "byte-swapped stream not supported (sent from a big-endian machine)",
            ));
        }
        if magic != MAGIC || u32_at(&self.header, 0) != BEGIN {
            return Err(StreamError::corrupt("not a zfs send stream (bad magic at byte 0)"));
        }
        Ok(())
    }

    /// A whole record header is in `self.header`; it started at `self.offset - 312`.
    fn record(&mut self) -> Result<(), StreamError> {
        let at = self.offset - RECORD_LEN as u64;
        let h = self.header;
        let rtype = u32_at(&h, 0);
        self.records += 1;
        if let Some(b) = self.current.as_mut() {
            b.records += 1;
        }
        let before = self.sum;
        // Every record but BEGIN carries the checksum of everything before its last 32
        // bytes (OpenZFS 2.x); zero means "not computed" (zfs-fuse, the compound ENDs).
        if rtype != BEGIN {
            let stored = cksum_at(&h, RECORD_CKSUM_AT);
            if stored != [0; 4] {
                let mut s = self.sum;
                s.update(&h[..RECORD_CKSUM_AT]);
                if s.value() != stored {
                    return Err(StreamError::corrupt(format!(
                        "record checksum mismatch in {} record at byte {at}{}",
                        type_name(rtype),
                        self.in_snapshot()
                    )));
                }
            }
        }
        match (self.phase, rtype) {
            (Phase::Start, BEGIN) => {
                let b = self.begin(&h, at)?;
                match u64_at(&h, 16) & 3 {
                    SUBSTREAM => {
                        self.check_expected_single(&b)?;
                        self.start_substream(b, &h)?;
                        self.phase = Phase::Sub;
                    }
                    COMPOUNDSTREAM => {
                        self.sum = StreamSum::default();
                        self.sum.update(&h);
                        self.compound = Some(b);
                        self.phase = Phase::CompoundHeader;
                    }
                    t => {
                        return Err(StreamError::new(
                            StreamErrorKind::Unsupported,
                            format!("unknown stream header type {t} at byte {at}"),
                        ))
                    }
                }
                self.payload_left = self.begin_payload(&h, at)?;
            }
            (Phase::Between, BEGIN) => {
                let b = self.begin(&h, at)?;
                if u64_at(&h, 16) & 3 != SUBSTREAM {
                    return Err(StreamError::corrupt(format!(
                        "BEGIN record at byte {at} inside a compound stream is not a substream"
                    )));
                }
                self.start_substream(b, &h)?;
                self.phase = Phase::Sub;
                self.payload_left = self.begin_payload(&h, at)?;
            }
            (Phase::Sub, END) => {
                self.end_record(&h, at, before.value())?;
                self.sum.update(&h);
                let b = self.current.take().ok_or_else(|| internal("END without a substream"))?;
                self.substreams.push(Substream {
                    toguid: b.toguid,
                    fromguid: b.fromguid,
                    toname: b.toname,
                    dedup: b.dedup,
                    raw: b.raw,
                    bytes: self.offset - b.at,
                    records: b.records,
                });
                self.phase = if self.compound.is_some() { Phase::Between } else { Phase::Done };
            }
            (Phase::CompoundHeader, END) => {
                self.end_record(&h, at, before.value())?;
                self.phase = Phase::Between;
            }
            (Phase::Between, END) => {
                // The final END of a compound stream is all zeros after its type.
                if h[4..].iter().any(|&x| x != 0) {
                    return Err(StreamError::corrupt(format!("corrupt final END record at byte {at} (not all zero)")));
                }
                self.phase = Phase::Done;
            }
            (Phase::Sub, BEGIN) => {
                return Err(StreamError::corrupt(format!(
                    "BEGIN record at byte {at} inside the stream of {} (no END before it)",
                    self.current.as_ref().map(|b| b.toname.as_str()).unwrap_or("?")
                )))
            }
            (Phase::Sub, t) => {
                self.payload_left = self.payload_len(&h, t, at)?;
                self.sum.update(&h);
            }
            (Phase::Start, _) => return Err(StreamError::corrupt("not a zfs send stream (bad magic at byte 0)")),
            (Phase::CompoundHeader, t) => {
                return Err(StreamError::corrupt(format!(
                    "{} record at byte {at} where the compound header's END belongs",
                    type_name(t)
                )))
            }
            (Phase::Between, t) => {
                return Err(StreamError::corrupt(format!(
                    "{} record (type {t}) at byte {at} between substreams (expected BEGIN or the final END)",
                    type_name(t)
                )))
            }
            (Phase::Done, _) => return Err(internal("record after the end")),
        }
        Ok(())
    }

    fn begin(&self, h: &[u8; RECORD_LEN], at: u64) -> Result<Begin, StreamError> {
        let magic = u64_at(h, 8);
        if magic != MAGIC {
            let what = if magic == MAGIC.swap_bytes() { "byte-swapped BEGIN" } else { "bad magic in BEGIN" };
            return Err(StreamError::corrupt(format!("{what} record at byte {at}")));
        }
        let name = &h[56..RECORD_LEN];
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        Ok(Begin {
            toguid: u64_at(h, 40),
            fromguid: u64_at(h, 48),
            toname: String::from_utf8_lossy(&name[..end]).into_owned(),
            dedup: (u64_at(h, 16) >> 2) & FEATURE_DEDUP != 0,
            raw: (u64_at(h, 16) >> 2) & FEATURE_RAW != 0,
            at,
            records: 1,
        })
    }

    fn begin_payload(&self, h: &[u8; RECORD_LEN], at: u64) -> Result<u64, StreamError> {
        let len = u32_at(h, 4) as u64;
        if len > MAX_BEGIN_PAYLOAD {
            return Err(StreamError::corrupt(format!("implausible payload length {len} in BEGIN record at byte {at}")));
        }
        Ok(len)
    }

    fn start_substream(&mut self, b: Begin, h: &[u8; RECORD_LEN]) -> Result<(), StreamError> {
        if self.expect_raw && !b.raw {
            return Err(StreamError::new(
                StreamErrorKind::NotRaw,
                format!(
                    "stream of {} is not raw (zfs send -w): refusing to store it, an encrypted dataset's data \
                     would be stored decrypted",
                    b.toname
                ),
            ));
        }
        self.sum = StreamSum::default();
        self.sum.update(h);
        self.current = Some(b);
        Ok(())
    }

    /// An END record: its checksum must equal that of everything since its BEGIN, its
    /// toguid that of the BEGIN, and the rest must be zero (so no bit of it goes unchecked).
    fn end_record(&self, h: &[u8; RECORD_LEN], at: u64, want: [u64; 4]) -> Result<(), StreamError> {
        let begin = if self.phase == Phase::Sub { self.current.as_ref() } else { self.compound.as_ref() };
        let name = begin.map(|b| b.toname.as_str()).unwrap_or("?");
        if cksum_at(h, 8) != want {
            return Err(StreamError::corrupt(format!("END checksum mismatch for {name} at byte {at}")));
        }
        let toguid = u64_at(h, 40);
        if begin.map(|b| b.toguid) != Some(toguid) {
            return Err(StreamError::corrupt(format!("END record at byte {at} names guid {toguid}, not {name}'s")));
        }
        if u32_at(h, 4) != 0 || h[48..RECORD_CKSUM_AT].iter().any(|&x| x != 0) {
            return Err(StreamError::corrupt(format!("corrupt END record for {name} at byte {at}")));
        }
        Ok(())
    }

    /// Payload length of a record inside a substream, from its type-specific fields.
    fn payload_len(&self, h: &[u8; RECORD_LEN], t: u32, at: u64) -> Result<u64, StreamError> {
        let len = match t {
            OBJECT => {
                // drr_raw_bonuslen for raw (encrypted) sends, else drr_bonuslen rounded to 8.
                let raw = u32_at(h, 36) as u64;
                if raw != 0 {
                    raw
                } else {
                    (u32_at(h, 28) as u64).div_ceil(8) * 8
                }
            }
            WRITE => {
                // drr_compressed_size for compressed (-c) sends, else drr_logical_size.
                if h[50] != 0 {
                    u64_at(h, 96)
                } else {
                    u64_at(h, 32)
                }
            }
            SPILL => {
                let compressed = u64_at(h, 40);
                if compressed != 0 {
                    compressed
                } else {
                    u64_at(h, 16)
                }
            }
            WRITE_EMBEDDED => (u32_at(h, 52) as u64).div_ceil(8) * 8,
            FREEOBJECTS | FREE | WRITE_BYREF | OBJECT_RANGE | REDACT => 0,
            _ => {
                return Err(StreamError::corrupt(format!("unknown record type {t} at byte {at}{}", self.in_snapshot())))
            }
        };
        if len > MAX_DATA_PAYLOAD {
            return Err(StreamError::corrupt(format!(
                "implausible payload length {len} in {} record at byte {at}{}",
                type_name(t),
                self.in_snapshot()
            )));
        }
        Ok(len)
    }

    fn in_snapshot(&self) -> String {
        match &self.current {
            Some(b) => format!(" of {}", b.toname),
            None => String::new(),
        }
    }

    fn check_expected_single(&self, b: &Begin) -> Result<(), StreamError> {
        check_expected(self.expect_guid, self.expect_from, b.toguid, b.fromguid, &b.toname)
    }

    /// The verdict: the summary of a whole stream, or why it is not one.
    pub fn finish(self) -> Result<StreamSummary, StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.offset == 0 {
            return Err(StreamError::new(StreamErrorKind::Empty, "empty stream (no bytes at all)"));
        }
        if self.phase != Phase::Done {
            let what = match self.phase {
                Phase::Between => "no final END record",
                _ => "no END record",
            };
            return Err(StreamError::new(
                StreamErrorKind::Cut,
                format!("stream cut after {} bytes ({what})", self.offset),
            ));
        }
        let first = self.substreams.first();
        let last = self.substreams.last();
        let summary = match &self.compound {
            None => {
                let s = first.ok_or_else(|| internal("no substream"))?;
                StreamSummary {
                    bytes: self.offset,
                    kind: if s.fromguid == 0 { StreamKind::Full } else { StreamKind::Incremental },
                    toguid: s.toguid,
                    fromguid: s.fromguid,
                    toname: s.toname.clone(),
                    substreams: self.substreams.clone(),
                    dedup: s.dedup,
                    raw: s.raw,
                    records: self.records,
                }
            }
            Some(header) => StreamSummary {
                bytes: self.offset,
                kind: StreamKind::Compound,
                // The snapshot sent is the header's: with -R its children's substreams
                // follow it, so the last substream of that name, not the last of all.
                toguid: self
                    .substreams
                    .iter()
                    .rev()
                    .find(|s| s.toname == header.toname)
                    .or(last)
                    .map(|s| s.toguid)
                    .unwrap_or(0),
                fromguid: first.map(|s| s.fromguid).unwrap_or(0),
                toname: header.toname.clone(),
                substreams: self.substreams.clone(),
                dedup: header.dedup || self.substreams.iter().any(|s| s.dedup),
                raw: !self.substreams.is_empty() && self.substreams.iter().all(|s| s.raw),
                records: self.records,
            },
        };
        if summary.kind == StreamKind::Compound {
            check_expected(self.expect_guid, self.expect_from, summary.toguid, summary.fromguid, &summary.toname)?;
        }
        Ok(summary)
    }
}

fn check_expected(
    guid: Option<u64>,
    from: Option<u64>,
    toguid: u64,
    fromguid: u64,
    toname: &str,
) -> Result<(), StreamError> {
    let wrong = |m: String| StreamError::new(StreamErrorKind::WrongSnapshot, m);
    if let Some(g) = guid {
        if g != toguid {
            return Err(wrong(format!("stream is {toname} (guid {toguid}), expected guid {g}")));
        }
    }
    match from {
        Some(0) if fromguid != 0 => {
            Err(wrong(format!("stream is an incremental of {toname} (from guid {fromguid}), expected a full stream")))
        }
        Some(f) if f != fromguid && fromguid == 0 => {
            Err(wrong(format!("stream is a full stream of {toname}, expected an incremental from guid {f}")))
        }
        Some(f) if f != fromguid => {
            Err(wrong(format!("stream is {toname} from guid {fromguid}, expected an incremental from guid {f}")))
        }
        _ => Ok(()),
    }
}

fn internal(what: &str) -> StreamError {
    StreamError::corrupt(format!("internal error in the stream gate: {what}"))
}

fn u32_at(h: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

fn u64_at(h: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

fn cksum_at(h: &[u8], at: usize) -> [u64; 4] {
    [u64_at(h, at), u64_at(h, at + 8), u64_at(h, at + 16), u64_at(h, at + 24)]
}

/// Verify a whole in-memory stream.
pub fn verify(data: &[u8]) -> Result<StreamSummary, StreamError> {
    let mut g = StreamGate::new();
    g.feed(data)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/send-streams/{name}.zfs.zst", env!("CARGO_MANIFEST_DIR"));
        let packed = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        zstd::decode_all(&packed[..]).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The straightforward definition, to check the fast one against.
    fn naive(data: &[u8]) -> [u64; 4] {
        let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
        for w in data.chunks_exact(4) {
            a = a.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64);
            b = b.wrapping_add(a);
            c = c.wrapping_add(b);
            d = d.wrapping_add(c);
        }
        [a, b, c, d]
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn fletcher_lanes_and_combine_equal_the_definition() {
        let data = noise(1 << 16, 7);
        for len in [0usize, 4, 16, 252, 256, 260, 272, 1024, 4100, 65536] {
            let mut f = Fletcher4::default();
            f.update_words(&data[..len]);
            assert_eq!(f.words(), naive(&data[..len]), "len {len}");
        }
        // Incremental in uneven pieces, including partial words.
        let mut s = StreamSum::default();
        for piece in data[..40_000].chunks(1234) {
            s.update(piece);
        }
        assert_eq!(s.value(), naive(&data[..40_000]));
        let mut s = StreamSum::default();
        for b in &data[..3000] {
            s.update(std::slice::from_ref(b));
        }
        assert_eq!(s.value(), naive(&data[..3000]));
        // All-ones words push every sum through wrap-around quickly.
        let ff = vec![0xffu8; 1 << 20];
        let mut f = Fletcher4::default();
        f.update_words(&ff);
        assert_eq!(f.words(), naive(&ff));
    }

    const FIXTURES: &[(&str, StreamKind, u64, u64, usize)] = &[
        ("ozfs-full", StreamKind::Full, 11572013603998367654, 0, 1),
        ("ozfs-inc", StreamKind::Incremental, 14018699474177650188, 11572013603998367654, 1),
        ("full-s1", StreamKind::Full, 1361654108579790400, 0, 1),
        ("inc-s1-s2", StreamKind::Incremental, 12621845596508660139, 1361654108579790400, 1),
        ("inc-s2-s3", StreamKind::Incremental, 2510354881744416934, 12621845596508660139, 1),
        ("incI-s1-s3", StreamKind::Compound, 2510354881744416934, 1361654108579790400, 2),
        ("R", StreamKind::Compound, 14103139858484940217, 0, 3),
        ("D", StreamKind::Full, 12621845596508660139, 0, 1),
        ("Di", StreamKind::Incremental, 14103139858484940217, 12621845596508660139, 1),
    ];

    #[test]
    fn every_fixture_verifies_with_its_guids() {
        for &(name, kind, toguid, fromguid, subs) in FIXTURES {
            let data = fixture(name);
            let s = verify(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((s.kind, s.toguid, s.fromguid), (kind, toguid, fromguid), "{name}");
            assert_eq!(s.substreams.len(), subs, "{name}");
            assert_eq!(s.bytes, data.len() as u64, "{name}");
            assert_eq!(s.dedup, name.starts_with('D'), "{name}");
            assert!(s.records > 2, "{name}");
            assert!(s.substreams.iter().all(|x| x.toname.contains('@')), "{name}");
        }
        let r = verify(&fixture("R")).unwrap_or_else(|e| panic!("R: {e}"));
        let guids: Vec<u64> = r.substreams.iter().map(|s| s.toguid).collect();
        assert_eq!(guids, [12621845596508660139, 2510354881744416934, 14103139858484940217]);
        assert_eq!(r.toname, "srcpool/data@p1");
        let j = r.to_json();
        assert_eq!(j["toguid"], "14103139858484940217");
        assert_eq!(j["substreams"].as_array().map(|a| a.len()), Some(3));
    }

    #[test]
    fn one_byte_feeding_equals_whole_feeding() {
        for name in ["ozfs-inc", "incI-s1-s3", "inc-s1-s2"] {
            let data = fixture(name);
            let mut g = StreamGate::new();
            for b in &data {
                g.feed(std::slice::from_ref(b)).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            assert_eq!(g.finish(), verify(&data), "{name}");
            // And odd chunk sizes across record boundaries.
            let mut g = StreamGate::new();
            for piece in data.chunks(311) {
                g.feed(piece).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            assert_eq!(g.finish(), verify(&data), "{name}");
        }
    }

    /// Where each record starts, walking record by record with the gate itself.
    fn record_starts(data: &[u8]) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut g = StreamGate::new();
        let mut at = 0;
        while at < data.len() {
            starts.push(at);
            g.feed(&data[at..at + RECORD_LEN]).unwrap_or_else(|e| panic!("{e}"));
            let next = at + RECORD_LEN + g.payload_left as usize;
            g.feed(&data[at + RECORD_LEN..next]).unwrap_or_else(|e| panic!("{e}"));
            at = next;
        }
        assert!(starts.len() as u64 == g.records && g.finish().is_ok());
        starts
    }

    /// The stream cut at each of `offsets` (ascending) must fail as cut, never pass:
    /// one pass over the data, asking a clone of the gate at each offset.
    fn assert_cut_at(data: &[u8], offsets: &[usize], name: &str) {
        let mut g = StreamGate::new();
        let mut fed = 0;
        for &at in offsets {
            g.feed(&data[fed..at]).unwrap_or_else(|e| panic!("{name}: {e}"));
            fed = at;
            let e = g.clone().finish().expect_err(&format!("{name} cut at {at} passed"));
            if at == 0 {
                assert_eq!(e.kind, StreamErrorKind::Empty);
            } else {
                assert_eq!(e.kind, StreamErrorKind::Cut, "{name} at {at}: {e}");
                assert!(e.message.starts_with(&format!("stream cut after {at} bytes (no ")), "{e}");
            }
            // A clone says what a gate fed only the prefix says.
            if at % 977 == 0 {
                assert_eq!(verify(&data[..at]).unwrap_err(), e, "{name} at {at}");
            }
        }
    }

    #[test]
    fn every_truncation_fails_as_cut() {
        for &(name, ..) in FIXTURES {
            let data = fixture(name);
            // Every offset of the small streams; around every record boundary and a
            // spread of offsets in the big ones.
            let offsets: Vec<usize> = if data.len() < 100_000 {
                (0..data.len()).collect()
            } else {
                let mut o: Vec<usize> = (0..data.len()).step_by(data.len() / 997 + 1).collect();
                for s in record_starts(&data) {
                    o.extend([s.saturating_sub(1), s, s + 1, s + 16, s + 280, s + 311]);
                }
                o.push(data.len() - 1);
                o.retain(|&x| x < data.len());
                o.sort_unstable();
                o.dedup();
                o
            };
            assert_cut_at(&data, &offsets, name);
        }
        // A compound stream cut right after its last substream's END misses the final END.
        let data = fixture("R");
        let e = verify(&data[..data.len() - RECORD_LEN]).unwrap_err();
        assert!(e.message.ends_with("(no final END record)"), "{e}");
    }

    #[test]
    fn any_flipped_bit_fails() {
        // Every byte of the small streams, plain and compound, zfs-fuse and OpenZFS.
        for name in ["inc-s1-s2", "ozfs-inc", "incI-s1-s3", "Di"] {
            let mut data = fixture(name);
            for at in 0..data.len() {
                let bit = 1u8 << (at % 8);
                data[at] ^= bit;
                assert!(verify(&data).is_err(), "{name}: flipping bit {} of byte {at} passed", at % 8);
                data[at] ^= bit;
            }
        }
    }

    #[test]
    fn flips_name_the_problem() {
        // Data in the big WRITE payloads of a zfs-fuse stream: only the END checksum sees it.
        let mut data = fixture("full-s1");
        data[2_000_000] ^= 0x10;
        let e = verify(&data).unwrap_err();
        assert_eq!(e.kind, StreamErrorKind::Corrupt);
        let end_at = data.len() - RECORD_LEN;
        assert_eq!(e.message, format!("END checksum mismatch for srcpool/data@s1 at byte {end_at}"));
        // OpenZFS streams: the next record's own checksum catches it early.
        let mut data = fixture("ozfs-full");
        data[2_000_000] ^= 0x10;
        let e = verify(&data).unwrap_err();
        assert!(e.message.starts_with("record checksum mismatch in "), "{e}");
        assert!(e.message.ends_with(" of tank/data@s1"), "{e}");
        // The END checksum itself.
        let mut data = fixture("inc-s2-s3");
        let end_at = data.len() - RECORD_LEN;
        data[end_at + 9] ^= 1;
        let e = verify(&data).unwrap_err();
        assert_eq!(e.message, format!("END checksum mismatch for srcpool/data@s3 at byte {end_at}"));
    }

    #[test]
    fn garbage_empty_and_trailing_bytes() {
        let e = verify(&noise(5000, 3)).unwrap_err();
        assert_eq!(e.message, "not a zfs send stream (bad magic at byte 0)");
        assert_eq!(e.kind, StreamErrorKind::Corrupt);
        // Said after 16 bytes, not only once a whole record came.
        let mut g = StreamGate::new();
        assert!(g.feed(b"hello, this is not zfs").is_err());
        let e = verify(b"").unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (StreamErrorKind::Empty, "empty stream (no bytes at all)"));

        for name in ["inc-s1-s2", "R"] {
            let mut data = fixture(name);
            let len = data.len();
            data.push(0);
            let e = verify(&data).unwrap_err();
            assert_eq!(e.message, format!("data after the final END record (at byte {len})"), "{name}");
            assert_eq!(e.kind, StreamErrorKind::Corrupt);
            // Two streams back to back are not one stream either.
            data.pop();
            let twice = [data.clone(), data].concat();
            assert!(verify(&twice).is_err(), "{name}");
        }
    }

    #[test]
    fn errors_stick() {
        let mut g = StreamGate::new();
        assert!(g.feed(&noise(400, 9)).is_err());
        let again = g.feed(&fixture("inc-s1-s2"));
        assert_eq!(again.unwrap_err().message, "not a zfs send stream (bad magic at byte 0)");
    }

    #[test]
    fn byte_swapped_streams_are_refused_clearly() {
        let mut data = fixture("inc-s1-s2");
        data[8..16].reverse();
        data[0..4].reverse();
        let e = verify(&data).unwrap_err();
        assert_eq!(e.kind, StreamErrorKind::Unsupported);
        assert!(e.message.starts_with("byte-swapped stream not supported"), "{e}");
    }

    #[test]
    fn expected_guids_are_checked_at_begin() {
        let data = fixture("inc-s1-s2");
        let ok = |g: Option<u64>, f: Option<u64>| {
            let mut gate = StreamGate::expecting(g, f);
            gate.feed(&data).and_then(|_| gate.finish())
        };
        assert!(ok(Some(12621845596508660139), Some(1361654108579790400)).is_ok());
        assert!(ok(Some(12621845596508660139), None).is_ok());
        let e = ok(Some(5), None).unwrap_err();
        assert_eq!(e.kind, StreamErrorKind::WrongSnapshot);
        assert_eq!(e.message, "stream is srcpool/data@s2 (guid 12621845596508660139), expected guid 5");
        let e = ok(None, Some(0)).unwrap_err();
        assert!(e.message.contains("expected a full stream"), "{e}");
        let e = ok(None, Some(7)).unwrap_err();
        assert!(e.message.contains("expected an incremental from guid 7"), "{e}");
        // Refused at the BEGIN record, before any data is accepted.
        let mut gate = StreamGate::expecting(Some(5), None);
        assert!(gate.feed(&data[..RECORD_LEN]).is_err());
        // A full stream when an incremental was expected.
        let mut gate = StreamGate::expecting(None, Some(9));
        let e = gate.feed(&fixture("full-s1")).unwrap_err();
        assert!(e.message.contains("is a full stream of srcpool/data@s1"), "{e}");
        // Compound streams: checked against the last substream at the end.
        let mut gate = StreamGate::expecting(Some(1), None);
        gate.feed(&fixture("incI-s1-s3")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gate.finish().unwrap_err().kind, StreamErrorKind::WrongSnapshot);
    }

    #[test]
    fn a_cut_real_stream_is_cut_and_noise_is_corrupt() {
        assert_eq!(verify(b"").unwrap_err().kind, StreamErrorKind::Empty);
        assert_eq!(verify(&fixture("inc-s1-s2")[..5000]).unwrap_err().kind, StreamErrorKind::Cut);
        assert_eq!(verify(&noise(400, 1)).unwrap_err().kind, StreamErrorKind::Corrupt);
    }

    /// `cargo test --release --lib fletcher_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn fletcher_speed() {
        let data = noise(64 << 20, 5);
        let start = std::time::Instant::now();
        let mut f = Fletcher4::default();
        for _ in 0..8 {
            f.update_words(&data);
        }
        let secs = start.elapsed().as_secs_f64();
        println!("fletcher-4: {:.0} MB/s ({:x})", 8.0 * data.len() as f64 / 1e6 / secs, f.a);
        let start = std::time::Instant::now();
        let mut g = StreamGate::new();
        let stream = fixture("full-s1");
        for _ in 0..32 {
            g = StreamGate::new();
            g.feed(&stream).unwrap_or_else(|e| panic!("{e}"));
        }
        let secs = start.elapsed().as_secs_f64();
        println!("gate: {:.0} MB/s", 32.0 * stream.len() as f64 / 1e6 / secs);
        assert!(g.finish().is_ok());
    }
}
