//! Choosing the multipart part size. Pure. Invariants: every part but the last has the
//! same size (R2 requires it); parts are 5 MiB..5 GiB (S3's limits); the stream must fit
//! in `max_parts`. With no size hint the default carries a 2.4 TiB stream in 10,000 parts.

/// S3's smallest part (all but the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part, and the largest single PUT.
pub const MAX_PART: u64 = 5 << 30;
/// S3's part-count limit and our default for `--max-parts`.
pub const DEFAULT_MAX_PARTS: u32 = 10_000;
/// Part size when nothing is known: 256 MiB × 10,000 parts = 2.4 TiB.
pub const DEFAULT_PART: u64 = 256 << 20;
/// Smallest part we choose from a size hint: big enough that per-request overhead is
/// noise, small enough that many parts fly at once.
pub const PREFERRED_MIN_PART: u64 = 16 << 20;
/// Headroom over `--expected-size`, since zfs's size estimates run low for some streams.
const HINT_HEADROOM_PERCENT: u64 = 25;

/// How the part size was decided, for the report and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartPlan {
    pub part_size: u64,
    pub max_parts: u32,
}

impl PartPlan {
    /// The largest stream this plan can carry.
    pub fn capacity(&self) -> u64 {
        self.part_size.saturating_mul(self.max_parts as u64)
    }
}

/// `part_size`: `--part-size` if given (checked against S3 limits); else sized from
/// `expected` (`--expected-size`) with headroom; else the default.
pub fn plan(part_size: Option<u64>, expected: Option<u64>, max_parts: u32) -> Result<PartPlan, String> {
    if max_parts == 0 || max_parts > DEFAULT_MAX_PARTS {
        return Err(format!("--max-parts must be 1..={DEFAULT_MAX_PARTS}, not {max_parts}"));
    }
    let size = match (part_size, expected) {
        (Some(p), _) => {
            if !(MIN_PART..=MAX_PART).contains(&p) {
                return Err(format!("--part-size must be between 5 MiB and 5 GiB, not {p} bytes"));
            }
            p
        }
        (None, Some(e)) => {
            let with_headroom = e.saturating_add(e / 100 * HINT_HEADROOM_PERCENT);
            let needed = with_headroom.div_ceil(max_parts as u64);
            // Round up to whole MiB: tidy numbers in listings, same invariants.
            let mib = needed.div_ceil(1 << 20) << 20;
            let size = mib.max(PREFERRED_MIN_PART).max(MIN_PART);
            if size > MAX_PART {
                return Err(format!(
                    "--expected-size {e} bytes does not fit in {max_parts} parts of at most 5 GiB; raise --max-parts"
                ));
            }
            size
        }
        (None, None) => DEFAULT_PART,
    };
    Ok(PartPlan { part_size: size, max_parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    #[test]
    fn table() {
        // (part_size, expected, max_parts) -> part size or error
        type Case = (Option<u64>, Option<u64>, u32, Result<u64, &'static str>);
        let cases: &[Case] = &[
            (None, None, 10_000, Ok(256 * MIB)),
            (Some(5 * MIB), None, 10_000, Ok(5 * MIB)),
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
                (Ok(w), Ok(g)) => assert_eq!(g.part_size, *w, "{p:?} {e:?} {m}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{p:?} {e:?} {m}: {g}"),
                (w, g) => panic!("{p:?} {e:?} {m}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn default_carries_multi_tib_and_hints_always_fit() {
        assert!(plan(None, None, 10_000).unwrap().capacity() >= 2 * TIB + TIB / 4);
        for e in [1, MIB, 7 * GIB, 3 * TIB, 5 * TIB] {
            for m in [1_000, 10_000] {
                if let Ok(p) = plan(None, Some(e), m) {
                    assert!(p.capacity() >= e, "{e} in {m}");
                    assert!(p.part_size >= MIN_PART && p.part_size <= MAX_PART);
                }
            }
        }
    }
}
