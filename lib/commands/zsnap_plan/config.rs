//! `zsnap-plan config`: the resolved settings and where each came from; with --format sh,
//! assignments the scripts eval. It reads nothing but the settings.

use super::render::{lines, table, Rendered};
use super::Format;
use crate::config::{self, Settings};
use serde_json::json;

pub fn render(s: &Settings, f: Format) -> Rendered<'static> {
    Rendered::text(config_text(s, f))
}

fn config_text(s: &Settings, f: Format) -> String {
    let v = |x: &config::Setting| x.value.clone().unwrap_or_default();
    match f {
        Format::Sh => {
            // Always single-quoted: scripts eval this.
            let q = |x: &str| format!("'{}'", x.replace('\'', "'\\''"));
            let mut out = String::new();
            for (name, value) in [
                ("ZSNAP_DATASET", v(&s.dataset)),
                ("ZSNAP_BUCKET", v(&s.bucket)),
                ("ZSNAP_S3_PREFIX", s.s3_prefix().to_string()),
                ("ZSNAP_SNAPSHOT_PREFIX", s.snapshot_prefix().to_string()),
                ("ZSNAP_COMPRESSOR", s.compressor.spec()),
                ("ZSNAP_S3_URL", s.s3_url().unwrap_or_default()),
            ] {
                out.push_str(&format!("{name}={}\n", q(&value)));
            }
            if let Some(e) = &s.endpoint.value {
                out.push_str(&format!("ZSNAP_S3_ENDPOINT={}\n", q(e)));
            }
            out
        }
        Format::Json => lines(std::iter::once(json!({
            "dataset": s.dataset.value,
            "bucket": s.bucket.value,
            "s3_prefix": s.s3_prefix(),
            "snapshot_prefix": s.snapshot_prefix(),
            "compressor": s.compressor.spec(),
            "compressor_recorded": s.compressor.recorded(),
            "send_options": s.send_options.letters(),
            "encrypt_to": s.encrypt_to.as_ref().map(|r| r.fingerprints()),
            "identity_file": s.identity.value,
            "s3_url": s.s3_url(),
            "endpoint": s.endpoint.value,
            "region": s.region.value,
            "profile": s.profile.value,
            "config_file": s.config_file,
            "sources": {
                "dataset": s.dataset.source.to_string(),
                "bucket": s.bucket.source.to_string(),
                "s3_prefix": s.s3_prefix.source.to_string(),
                "snapshot_prefix": s.snapshot_prefix.source.to_string(),
                "compressor": s.compressor_setting.source.to_string(),
                "send_options": s.send_options_setting.source.to_string(),
                "encrypt_to": s.encrypt_to_setting.source.to_string(),
                "identity_file": s.identity.source.to_string(),
                "endpoint": s.endpoint.source.to_string(),
                "region": s.region.source.to_string(),
                "profile": s.profile.source.to_string(),
            },
        }))),
        Format::Table => table(
            &["SETTING", "VALUE", "FROM"],
            [
                ("dataset", v(&s.dataset), &s.dataset.source),
                ("bucket", v(&s.bucket), &s.bucket.source),
                ("s3-prefix", s.s3_prefix().to_string(), &s.s3_prefix.source),
                ("snapshot-prefix", s.snapshot_prefix().to_string(), &s.snapshot_prefix.source),
                ("compressor", s.compressor.spec(), &s.compressor_setting.source),
                ("endpoint", v(&s.endpoint), &s.endpoint.source),
                ("region", v(&s.region), &s.region.source),
                ("profile", v(&s.profile), &s.profile.source),
            ]
            .into_iter()
            .map(|(k, val, src)| vec![k.to_string(), val, src.to_string()])
            .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_as_shell() {
        let flags = config::Flags {
            dataset: Some("tank/data".into()),
            bucket: Some("bkt".into()),
            s3_prefix: Some("it's".into()),
            ..Default::default()
        };
        let s = config::resolve(&flags, &|_| None, None).unwrap();
        let out = config_text(&s, Format::Sh);
        assert_eq!(
            out,
            "ZSNAP_DATASET='tank/data'\nZSNAP_BUCKET='bkt'\nZSNAP_S3_PREFIX='it'\\''s/'\nZSNAP_SNAPSHOT_PREFIX=''\n\
             ZSNAP_COMPRESSOR='zstd'\nZSNAP_S3_URL='s3://bkt/it'\\''s/'\n"
        );
        let j: serde_json::Value = serde_json::from_str(config_text(&s, Format::Json).trim()).unwrap();
        assert_eq!(j["sources"]["bucket"], "flag --bucket");
        assert_eq!(j["sources"]["compressor"], "default");
    }
}
