//! `zsnap-plan config`: the resolved settings and where each came from; with --format sh,
//! assignments the scripts eval. It reads nothing but the settings. It also lists the
//! config's `[fs:DATASET]` sections: the datasets `--all` runs for.

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
            // For --all: one dataset a line (a POSIX sh string; bash reads it with mapfile),
            // and the file they came from, for the message when there are none.
            out.push_str(&format!("ZSNAP_FS_DATASETS={}\n", q(&s.fs_datasets.join("\n"))));
            out.push_str(&format!("ZSNAP_CONFIG_FILE={}\n", q(s.config_file.as_deref().unwrap_or(""))));
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
            "replicas": s.replicas(),
            "replica_ssh_config": s.replica_ssh_config.value,
            "s3_url": s.s3_url(),
            "endpoint": s.endpoint.value,
            "region": s.region.value,
            "profile": s.profile.value,
            "config_file": s.config_file,
            "fs_datasets": s.fs_datasets,
            "sources": {
                "dataset": s.dataset.source.to_string(),
                "bucket": s.bucket.source.to_string(),
                "s3_prefix": s.s3_prefix.source.to_string(),
                "snapshot_prefix": s.snapshot_prefix.source.to_string(),
                "compressor": s.compressor_setting.source.to_string(),
                "send_options": s.send_options_setting.source.to_string(),
                "encrypt_to": s.encrypt_to_setting.source.to_string(),
                "identity_file": s.identity.source.to_string(),
                "replicas": s.replica.source.to_string(),
                "replica_ssh_config": s.replica_ssh_config.source.to_string(),
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
            .chain(std::iter::once(vec![
                "fs-datasets".to_string(),
                s.fs_datasets.join(" "),
                s.config_file.clone().unwrap_or_else(|| "-".into()),
            ]))
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
             ZSNAP_COMPRESSOR='zstd'\nZSNAP_S3_URL='s3://bkt/it'\\''s/'\nZSNAP_FS_DATASETS=''\nZSNAP_CONFIG_FILE=''\n"
        );
        let j: serde_json::Value = serde_json::from_str(config_text(&s, Format::Json).trim()).unwrap();
        assert_eq!(j["sources"]["bucket"], "flag --bucket");
        assert_eq!(j["sources"]["compressor"], "default");
    }

    #[test]
    fn fs_datasets_one_a_line() {
        let file =
            config::ConfigFile::parse("/etc/z.conf", "[fs:tank/a]\n[fs:tank/b c]\n[main]\nBUCKET=bkt\n").unwrap();
        let s = config::resolve(&config::Flags::default(), &|_| None, Some(&file)).unwrap();
        let out = config_text(&s, Format::Sh);
        assert!(out.contains("ZSNAP_FS_DATASETS='tank/a\ntank/b c'\nZSNAP_CONFIG_FILE='/etc/z.conf'\n"), "{out}");
        let j: serde_json::Value = serde_json::from_str(config_text(&s, Format::Json).trim()).unwrap();
        assert_eq!(j["fs_datasets"], serde_json::json!(["tank/a", "tank/b c"]));
    }
}
