//! Choosing how a stream is cut into multipart parts. Pure. Invariants: parts are whole
//! MiB (or the `--part-size` given), 5 MiB..5 GiB (S3's limits), non-decreasing, and the
//! stream must fit in `max_parts`.
//!
//! Two ways to cut, recorded with the object so a reader can find the part boundaries:
//! - [`Schedule::Equal`]: every part but the last the same size, from `--part-size` or
//!   `--expected-size` (R2 requires this); recorded as `zsnap-part-size`.
//! - [`Schedule::Grow`], when nothing says how big the stream is: 16 MiB parts first, so a
//!   small piped stream needs little memory and many parts fly at once, growing by runs so
//!   that 10,000 parts still carry 5 TiB; recorded as `zsnap-part-schedule` (`grow1:…`),
//!   which a reader that knows only `zsnap-part-size` ignores rather than misreads.

/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and the largest single PUT.
pub const MAX_PART: u64 = 5 << 30;
/// S3's part-count limit and our default for `--max-parts`.
pub const DEFAULT_MAX_PARTS: u32 = 10_000;
/// Smallest part we choose ourselves: big enough that per-request overhead is noise,
/// small enough that many parts fly at once.
pub const PREFERRED_MIN_PART: u64 = 16 << 20;
/// What the growth schedule carries in 10,000 parts, at least.
pub const GROWTH_TARGET: u64 = 5 << 40;
/// Headroom over `--expected-size`, since zfs's size estimates run low for some streams.
const HINT_HEADROOM_PERCENT: u64 = 25;
/// The growth schedule's version, the prefix of its recorded form.
const GROW_TAG: &str = "grow1:";

const MIB: u64 = 1 << 20;

/// The growth schedule for 10,000 parts: (part size in MiB, the part number its run ends
/// at). Why this shape: 16 MiB parts carry the first 25 GiB (piped streams of any usual
/// size never need more than (concurrency + 1) × 16 MiB); parts stay at most 256 MiB up
/// to 1 TiB (never more memory than the old fixed 256 MiB default, for any stream that
/// default could carry in 4,096 parts); the last runs then grow to 2 GiB so that 10,000
/// parts carry 5.08 TiB. A plain doubling every N parts either misses 5 TiB or reaches
/// 512 MiB parts before 1 TiB.
const GROWTH: [(u64, u32); 8] =
    [(16, 1600), (32, 2100), (64, 2600), (128, 3100), (256, 6660), (512, 7660), (1024, 8660), (2048, 10_000)];

/// How the stream is cut into parts; part `n` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Every part but the last this many bytes.
    Equal(u64),
    /// Runs of (part size, how many parts); the last run goes on past its count.
    Grow(Vec<(u64, u32)>),
}

impl Schedule {
    /// The growth schedule for `max_parts`: the 10,000-part table with its run ends scaled
    /// to `max_parts` (at least one part of 16 MiB), and the last run at 5 GiB rather than
    /// 2 GiB when 2 GiB would not reach 5 TiB, so a smaller part limit still carries as
    /// much as it can without giving up the small first parts.
    pub fn growth(max_parts: u32) -> Schedule {
        let mut runs: Vec<(u64, u32)> = Vec::new();
        let mut prev = 0u32;
        for (i, &(mib, end)) in GROWTH.iter().enumerate() {
            let scaled = (end as u64 * max_parts as u64 / DEFAULT_MAX_PARTS as u64) as u32;
            let end = if i == 0 { scaled.max(1) } else { scaled.max(prev) };
            if end > prev {
                runs.push((mib * MIB, end - prev));
                prev = end;
            }
        }
        let grown = Schedule::Grow(runs.clone());
        if grown.capacity(max_parts) < GROWTH_TARGET {
            if let Some(last) = runs.last_mut() {
                last.0 = MAX_PART;
            }
            return Schedule::Grow(runs);
        }
        grown
    }

    /// The size of part `n` (1-based; 0 is taken as 1).
    pub fn part_size(&self, n: u32) -> u64 {
        match self {
            Schedule::Equal(size) => *size,
            Schedule::Grow(runs) => {
                let mut left = n.max(1);
                for &(size, count) in runs {
                    if left <= count {
                        return size;
                    }
                    left -= count;
                }
                runs.last().map_or(PREFERRED_MIN_PART, |r| r.0)
            }
        }
    }

    /// The most bytes `parts` parts carry.
    pub fn capacity(&self, parts: u32) -> u64 {
        match self {
            Schedule::Equal(size) => size.saturating_mul(parts as u64),
            Schedule::Grow(runs) => {
                let (mut total, mut left) = (0u64, parts);
                for (i, &(size, count)) in runs.iter().enumerate() {
                    let here = if i + 1 == runs.len() { left } else { left.min(count) };
                    total = total.saturating_add(size.saturating_mul(here as u64));
                    left -= here;
                }
                total
            }
        }
    }

    /// How many parts a stream of `bytes` is cut into (at least 1: an empty stream is one
    /// empty PUT).
    pub fn parts_for(&self, bytes: u64) -> u64 {
        let (mut n, mut left) = (0u64, bytes);
        if let Schedule::Equal(size) = self {
            return bytes.div_ceil(*size).max(1);
        }
        while left > 0 {
            n += 1;
            left = left.saturating_sub(self.part_size(n.min(u32::MAX as u64) as u32));
        }
        n.max(1)
    }

    /// The metadata (key, value) that records this schedule with the object.
    pub fn metadata(&self) -> (&'static str, String) {
        match self {
            Schedule::Equal(size) => (super::meta::PART_SIZE, size.to_string()),
            Schedule::Grow(runs) => {
                let runs: Vec<String> = runs.iter().map(|(size, count)| format!("{}M*{count}", size / MIB)).collect();
                (super::meta::PART_SCHEDULE, format!("{GROW_TAG}{}", runs.join(",")))
            }
        }
    }

    /// The schedule an object records: `zsnap-part-schedule` if present (a version this
    /// reader knows, else none), else `zsnap-part-size`. `None`: the boundaries are
    /// unknown, so only whole-object checks apply.
    pub fn from_metadata(part_size: Option<&str>, schedule: Option<&str>) -> Option<Schedule> {
        if let Some(s) = schedule {
            return Schedule::parse_grow(s.trim());
        }
        let size: u64 = part_size?.trim().parse().ok()?;
        (size > 0).then_some(Schedule::Equal(size))
    }

    /// `grow1:16M*1600,32M*500,…`: runs of whole-MiB sizes, each at least one part.
    fn parse_grow(text: &str) -> Option<Schedule> {
        let body = text.strip_prefix(GROW_TAG)?;
        let mut runs = Vec::new();
        for run in body.split(',') {
            let (size, count) = run.split_once('*')?;
            let mib: u64 = size.strip_suffix('M')?.parse().ok()?;
            let count: u32 = count.parse().ok()?;
            if mib == 0 || mib > MAX_PART / MIB || count == 0 {
                return None;
            }
            runs.push((mib * MIB, count));
        }
        Some(Schedule::Grow(runs))
    }
}

/// How the stream will be cut, for the uploader, the report and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartPlan {
    pub schedule: Schedule,
    pub max_parts: u32,
}

impl PartPlan {
    /// The size of part `n` (1-based).
    pub fn part_size(&self, n: u32) -> u64 {
        self.schedule.part_size(n)
    }

    /// The largest stream this plan can carry.
    pub fn capacity(&self) -> u64 {
        self.schedule.capacity(self.max_parts)
    }

    /// Upper bound on the part buffers' memory once `bytes` of the stream are read, with
    /// `concurrency` parts in flight: the uploader holds at most `concurrency + 1` buffers
    /// (those in flight and the one filling), none larger than the part being cut.
    pub fn memory_at(&self, bytes: u64, concurrency: usize) -> u64 {
        let n = self.schedule.parts_for(bytes).min(u32::MAX as u64) as u32;
        (concurrency as u64 + 1).saturating_mul(self.part_size(n))
    }
}

/// `part_size`: `--part-size` if given (checked against S3 limits); else equal parts sized
/// from `expected` (`--expected-size`) with headroom; else the growth schedule.
pub fn plan(part_size: Option<u64>, expected: Option<u64>, max_parts: u32) -> Result<PartPlan, String> {
    if max_parts == 0 || max_parts > DEFAULT_MAX_PARTS {
        return Err(format!("--max-parts must be 1..={DEFAULT_MAX_PARTS}, not {max_parts}"));
    }
    let schedule = match (part_size, expected) {
        (Some(p), _) => {
            if !(MIN_PART..=MAX_PART).contains(&p) {
                return Err(format!("--part-size must be between 5 MiB and 5 GiB, not {p} bytes"));
            }
            Schedule::Equal(p)
        }
        (None, Some(e)) => {
            let with_headroom = e.saturating_add(e / 100 * HINT_HEADROOM_PERCENT);
            let needed = with_headroom.div_ceil(max_parts as u64);
            // Round up to whole MiB: tidy numbers in listings, same invariants.
            let mib = needed.div_ceil(MIB) << 20;
            let size = mib.max(PREFERRED_MIN_PART).max(MIN_PART);
            if size > MAX_PART {
                return Err(format!(
                    "--expected-size {e} bytes does not fit in {max_parts} parts of at most 5 GiB; raise --max-parts"
                ));
            }
            Schedule::Equal(size)
        }
        (None, None) => Schedule::growth(max_parts),
    };
    Ok(PartPlan { schedule, max_parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    fn sizes(p: &PartPlan) -> Vec<u64> {
        (1..=p.max_parts).map(|n| p.part_size(n)).collect()
    }

    #[test]
    fn table() {
        // (part_size, expected, max_parts) -> equal part size or error
        type Case = (Option<u64>, Option<u64>, u32, Result<u64, &'static str>);
        let cases: &[Case] = &[
            (Some(5 * MIB), None, 10_000, Ok(5 * MIB)),
            (Some(5 * MIB + 1), None, 10_000, Ok(5 * MIB + 1)),
            (Some(4 * MIB), None, 10_000, Err("--part-size")),
            (Some(6 * GIB), None, 10_000, Err("--part-size")),
            (None, Some(0), 10_000, Ok(16 * MIB)),
            (None, Some(GIB), 10_000, Ok(16 * MIB)),
            // 1 TiB over 10,000 parts with 25% headroom: 134.2 MB -> 132 MiB... rounded up
            (None, Some(TIB), 10_000, Ok(132 * MIB)),
            // Scaleway's 1,000 parts
            (None, Some(TIB), 1_000, Ok(1311 * MIB)),
            (None, Some(50 * TIB), 1_000, Err("--max-parts")),
            (None, None, 0, Err("--max-parts")),
            (None, None, 10_001, Err("--max-parts")),
        ];
        for (p, e, m, want) in cases {
            let got = plan(*p, *e, *m);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g.schedule, Schedule::Equal(*w), "{p:?} {e:?} {m}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{p:?} {e:?} {m}: {g}"),
                (w, g) => panic!("{p:?} {e:?} {m}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn hints_always_fit() {
        for e in [1, MIB, 7 * GIB, 3 * TIB, 5 * TIB] {
            for m in [1_000, 10_000] {
                if let Ok(p) = plan(None, Some(e), m) {
                    assert!(p.capacity() >= e, "{e} in {m}");
                    assert!(matches!(p.schedule, Schedule::Equal(s) if (MIN_PART..=MAX_PART).contains(&s)));
                }
            }
        }
    }

    #[test]
    fn with_no_hint_parts_grow_and_10000_carry_5_tib() {
        let p = plan(None, None, 10_000).unwrap();
        assert!(matches!(p.schedule, Schedule::Grow(_)));
        assert!(p.capacity() >= 5 * TIB, "{}", p.capacity());
        assert_eq!(p.capacity(), 5204 * GIB + 384 * MIB);
        let s = sizes(&p);
        assert_eq!((s[0], s[1599], s[1600], s[9999]), (16 * MIB, 16 * MIB, 32 * MIB, 2 * GIB));
        assert_eq!(p.part_size(10_001), 2 * GIB, "past the table, the last run goes on");
    }

    #[test]
    fn grown_parts_are_whole_mib_within_s3_limits_and_never_shrink() {
        for m in [1, 2, 7, 10, 100, 1_000, 2_500, 9_999, 10_000] {
            let p = plan(None, None, m).unwrap();
            let s = sizes(&p);
            // (One part is all there is: it takes the largest size, as a single PUT could.)
            assert_eq!(s[0], if m == 1 { MAX_PART } else { 16 * MIB }, "{m}: small parts first");
            for w in s.windows(2) {
                assert!(w[0] <= w[1], "{m}: {w:?}");
            }
            for x in &s {
                assert!(x % MIB == 0 && (MIN_PART..=MAX_PART).contains(x), "{m}: {x}");
            }
            // capacity() is the sum of the part sizes.
            assert_eq!(p.capacity(), s.iter().sum::<u64>(), "{m}");
        }
    }

    #[test]
    fn a_smaller_part_limit_still_carries_what_it_can() {
        // Scaleway's 1,000 parts: the table scaled, its last run at 5 GiB: 922 GiB (the
        // old default carried 250 GiB there), still 16 MiB parts for the first 2.5 GiB.
        let p = plan(None, None, 1_000).unwrap();
        assert_eq!(p.capacity(), 922 * GIB + 448 * MIB);
        assert_eq!((p.part_size(160), p.part_size(161), p.part_size(1_000)), (16 * MIB, 32 * MIB, MAX_PART));
        // At 9,000 a 2 GiB last run would fall short of 5 TiB: 5 GiB instead.
        let p = plan(None, None, 9_000).unwrap();
        assert_eq!(p.part_size(9_000), MAX_PART);
        assert!(p.capacity() >= 5 * TIB);
        assert_eq!(plan(None, None, 9_999).unwrap().part_size(9_999), 2 * GIB);
        assert!(plan(None, None, 2_500).unwrap().capacity() >= 2 * TIB);
        // Tiny limits (tests use them to cross size changes in a few MiB): every run shows.
        let p = plan(None, None, 10).unwrap();
        assert_eq!(
            sizes(&p).iter().map(|s| s / MIB).collect::<Vec<_>>(),
            [16, 32, 128, 256, 256, 256, 512, 1024, 5120, 5120]
        );
    }

    #[test]
    fn memory_stays_within_the_documented_bound() {
        // Bound documented in s3put's --help: 5 × 16 MiB up to 25 GiB, at most the old
        // default's 5 × 256 MiB up to 1 TiB, 5 × 2 GiB at 5 TiB (concurrency 4).
        let p = plan(None, None, 10_000).unwrap();
        let bound = |bytes: u64| match bytes {
            b if b <= 25 * GIB => 5 * 16 * MIB,
            b if b <= TIB => 5 * 256 * MIB,
            _ => 5 * 2 * GIB,
        };
        for bytes in [0, 1, MIB, 100 * MIB, 273 * MIB, GIB, 25 * GIB, 100 * GIB, 1000 * GIB, TIB, 5 * TIB] {
            let m = p.memory_at(bytes, 4);
            assert!(m <= bound(bytes), "{bytes}: {m}");
        }
        // And the memory at every point of a stream on the way to 1 TiB, part by part.
        let mut read = 0u64;
        for n in 1..=p.max_parts {
            if read > TIB {
                break;
            }
            assert!(5 * p.part_size(n) <= bound(read + 1), "part {n} at {read}");
            read += p.part_size(n);
        }
        assert_eq!(p.memory_at(100 * GIB, 4), 5 * 128 * MIB);
        assert_eq!(p.memory_at(GIB, 8), 9 * 16 * MIB);
    }

    #[test]
    fn part_counts() {
        let g = plan(None, None, 10_000).unwrap().schedule;
        for (bytes, want) in [
            (0, 1),
            (1, 1),
            (16 * MIB, 1),
            (16 * MIB + 1, 2),
            (273 * MIB, 18),
            (GIB, 64),
            (25 * GIB, 1600),
            (25 * GIB + 1, 1601),
            (100 * GIB, 1600 + 500 + 500 + 225),
            (TIB, 6659),
            (5 * TIB, 9_958),
        ] {
            assert_eq!(g.parts_for(bytes), want, "{bytes}");
        }
        assert_eq!(Schedule::Equal(5 * MIB).parts_for(11 * MIB), 3);
    }

    #[test]
    fn recorded_forms_read_back() {
        let g = Schedule::growth(10_000);
        let (key, value) = g.metadata();
        assert_eq!(key, "zsnap-part-schedule");
        assert_eq!(value, "grow1:16M*1600,32M*500,64M*500,128M*500,256M*3560,512M*1000,1024M*1000,2048M*1340");
        assert_eq!(Schedule::from_metadata(None, Some(&value)), Some(g.clone()));
        assert_eq!(Schedule::from_metadata(Some("5242880"), Some(&value)), Some(g), "the schedule wins");
        assert_eq!(Schedule::Equal(5 * MIB).metadata(), ("zsnap-part-size", "5242880".to_string()));
        assert_eq!(Schedule::from_metadata(Some(" 5242880 "), None), Some(Schedule::Equal(5 * MIB)));
        for bad in ["grow2:16M*1", "grow1:", "grow1:16M", "grow1:16*3", "grow1:0M*3", "grow1:16M*0", "grow1:6000M*1"] {
            assert_eq!(Schedule::from_metadata(Some("5242880"), Some(bad)), None, "{bad}");
        }
        assert_eq!(Schedule::from_metadata(Some("0"), None), None);
        assert_eq!(Schedule::from_metadata(Some("x"), None), None);
    }
}
