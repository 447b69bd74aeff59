//! Object Lock and delete permissions, the S3 side of prune, against moto (Garage has
//! neither): a locked object survives `s3put --delete`, `--extend-lock` only ever raises
//! a retention, and a backup host's put-only key uploads but cannot delete.

use crate::common::*;

const FAR: &str = "2098-01-01T00:00:00Z";
const FARTHER: &str = "2099-01-01T00:00:00Z";

fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// The retain-until date (RFC 3339) and mode HEAD shows, as boto3 sees them.
fn head_lock(moto: &Moto, bucket: &str, key: &str) -> (String, String) {
    let script = "h = s3.head_object(Bucket=sys.argv[1], Key=sys.argv[2])\n\
                  d = h.get('ObjectLockRetainUntilDate')\n\
                  print(h.get('ObjectLockMode'), d.strftime('%Y-%m-%dT%H:%M:%SZ') if d else None)";
    let out = moto.python(script, &[bucket, key]).success();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (mode, until) = text.trim().split_once(' ').unwrap_or_else(|| panic!("HEAD said {text:?}"));
    (mode.to_string(), until.to_string())
}

#[test]
fn a_locked_object_is_not_deleted() {
    let moto = Moto::get();
    let admin = &moto.admin;
    let b = moto.bucket("lock", true);
    moto.s3put(admin, &["--lock-mode", "GOVERNANCE", "--lock-until", FAR, &url(&b, "locked")], Some(b"kept")).success();
    moto.s3put(admin, &[&url(&b, "free")], Some(b"goes")).success();
    assert_eq!(head_lock(&moto, &b, "locked"), ("GOVERNANCE".to_string(), FAR.to_string()));

    let out = moto.s3put(admin, &["--delete", &url(&b, "locked"), &url(&b, "free")], None).fails(
        77,
        &format!("deleting 1 of 2 objects in s3://{b} failed: locked is under Object Lock (GOVERNANCE until {FAR})"),
    );
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "one line per key");
    assert_eq!(
        (&lines[0]["key"], &lines[0]["deleted"], &lines[0]["code"]),
        (&url(&b, "locked").into(), &false.into(), &"ObjectLocked".into())
    );
    assert_eq!((&lines[1]["key"], &lines[1]["deleted"]), (&url(&b, "free").into(), &true.into()));
    assert_eq!(moto.s3get(admin, &url(&b, "locked")).success().stdout, b"kept");
    moto.s3get(admin, &url(&b, "free")).fails(66, "no such object");
}

/// Why `--delete` refuses locked keys: in a versioned bucket (every Object Lock bucket is
/// one) a plain DeleteObjects "succeeds" on a locked object by adding a delete marker, so
/// the object reads as gone while its locked version stays; only a delete of that version
/// is refused.
#[test]
fn a_plain_delete_only_hides_a_locked_object() {
    let moto = Moto::get();
    let b = moto.bucket("marker", true);
    moto.s3put(&moto.admin, &["--lock-mode", "GOVERNANCE", "--lock-until", FAR, &url(&b, "k")], Some(b"kept"))
        .success();
    let script = "b, k = sys.argv[1], sys.argv[2]\n\
        d = s3.delete_objects(Bucket=b, Delete={'Objects': [{'Key': k}], 'Quiet': False})\n\
        vs = s3.list_object_versions(Bucket=b, Prefix=k)\n\
        v = vs['Versions'][0]['VersionId']\n\
        dv = s3.delete_objects(Bucket=b, Delete={'Objects': [{'Key': k, 'VersionId': v}], 'Quiet': False})\n\
        print(json.dumps({'deleted': d.get('Deleted', []), 'errors': d.get('Errors', []),\n\
            'versions': len(vs.get('Versions', [])), 'markers': len(vs.get('DeleteMarkers', [])),\n\
            'version_errors': dv.get('Errors', [])}))";
    let seen = moto.python(script, &[&b, "k"]).success().json();
    assert_eq!(seen["deleted"][0]["DeleteMarker"], true, "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    assert_eq!((seen["versions"].as_u64(), seen["markers"].as_u64()), (Some(1), Some(1)), "{seen}");
    assert_eq!(seen["version_errors"][0]["Code"], "AccessDenied", "deleting the locked version is refused: {seen}");
    moto.s3get(&moto.admin, &url(&b, "k")).fails(66, "no such object");
}

#[test]
fn extend_lock_raises_and_never_shortens() {
    let moto = Moto::get();
    let admin = &moto.admin;
    let b = moto.bucket("extend", true);
    moto.s3put(admin, &["--lock-mode", "GOVERNANCE", "--lock-until", FAR, &url(&b, "a")], Some(b"a")).success();
    moto.s3put(admin, &[&url(&b, "plain")], Some(b"p")).success();

    let extend = |until: &str, keys: &[&str]| {
        let mut args = vec!["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", until];
        let urls: Vec<String> = keys.iter().map(|k| url(&b, k)).collect();
        args.extend(urls.iter().map(String::as_str));
        moto.s3put(admin, &args, None).success().json_lines()
    };
    let raised = extend(FARTHER, &["a", "plain"]);
    let want = serde_json::json!({"key": url(&b, "a"), "mode": "GOVERNANCE", "retain_until_before": FAR, "retain_until": FARTHER, "changed": true});
    assert_eq!(raised[0], want);
    let want = serde_json::json!({"key": url(&b, "plain"), "mode": "GOVERNANCE", "retain_until_before": null, "retain_until": FARTHER, "changed": true});
    assert_eq!(raised[1], want);
    assert_eq!(head_lock(&moto, &b, "a"), ("GOVERNANCE".to_string(), FARTHER.to_string()));
    assert_eq!(head_lock(&moto, &b, "plain"), ("GOVERNANCE".to_string(), FARTHER.to_string()));

    // An earlier date leaves the later one alone (moto itself would shorten it).
    let kept = extend(FAR, &["a"]);
    let want = serde_json::json!({"key": url(&b, "a"), "mode": "GOVERNANCE", "retain_until_before": FARTHER, "retain_until": FARTHER, "changed": false});
    assert_eq!(kept[0], want);
    assert_eq!(head_lock(&moto, &b, "a"), ("GOVERNANCE".to_string(), FARTHER.to_string()));

    let missing =
        moto.s3put(admin, &["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", FAR, &url(&b, "nope")], None);
    missing.fails(66, "no such object");
}

#[test]
fn extend_lock_needs_a_bucket_with_object_lock() {
    let moto = Moto::get();
    let b = moto.bucket("nolock", false);
    moto.s3put(&moto.admin, &[&url(&b, "k")], Some(b"k")).success();
    let args = ["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", FAR];
    let out = moto.s3put(&moto.admin, &[&args[..], &[&url(&b, "k")]].concat(), None);
    let out = out.fails(76, &format!("s3://{b} has no Object Lock (GetObjectLockConfiguration answered"));
    assert!(out.stdout.is_empty());
    assert_eq!(head_lock(&moto, &b, "k"), ("None".to_string(), "None".to_string()));

    // Garage has no Object Lock at all (and ignores lock headers on upload).
    let ctx = Ctx::new("extend-garage");
    ctx.put("k", b"k", &[]).success();
    let mut c = ctx.cmd("s3put");
    c.args(args).arg(ctx.url("k"));
    let out =
        run(c, None, TIMEOUT).fails(76, "has no Object Lock (GetObjectLockConfiguration answered NotImplemented)");
    assert!(out.stdout.is_empty());

    // An upload asking for a lock the bucket cannot keep stores nothing.
    let lock = ["--lock-mode", "GOVERNANCE", "--lock-until", FAR];
    let out = ctx.put("locked", b"data", &lock);
    out.fails(76, "has no Object Lock");
    ctx.get("locked", &[]).fails(66, "no such object");
    let out = moto.s3put(&moto.admin, &[&lock[..], &[&url(&b, "locked")]].concat(), Some(b"data"));
    out.fails(76, &format!("s3://{b} has no Object Lock"));
    moto.s3get(&moto.admin, &url(&b, "locked")).fails(66, "no such object");
}

/// The backup host's key: uploads (multipart too), reads and cleans up its uploads, but
/// may not delete; prune runs with an admin key.
#[test]
fn a_put_only_key_uploads_but_cannot_delete() {
    let moto = Moto::get();
    let b = moto.bucket("iam", false);
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads",
                       "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [format!("arn:aws:s3:::{b}"), format!("arn:aws:s3:::{b}/*")],
        }],
    });
    let host = moto.user("backup-host", &policy);
    let big = data(6 * MIB, 7);
    let put = moto.s3put(&host, &["--part-size", "5M", &url(&b, "big")], Some(&big)).success().json();
    assert_eq!((put["multipart"].as_bool(), put["parts"].as_u64()), (Some(true), Some(2)), "{put}");
    moto.s3put(&host, &[&url(&b, "small")], Some(b"small")).success();
    assert!(moto.s3get(&host, &url(&b, "big")).success().stdout == big, "multipart object read back");
    let listed = moto.s3put(&host, &["--list-uploads", &url(&b, "")], None).success();
    assert!(listed.stdout.is_empty(), "no upload left in progress");

    let out = moto.s3put(&host, &["--delete", &url(&b, "small"), &url(&b, "big")], None).fails(
        77,
        &format!(
            "s3put: deleting 2 of 2 objects in s3://{b} failed: access denied (AccessDenied) for small (this key may \
             not delete; prune needs an admin key with s3:DeleteObject)"
        ),
    );
    for line in out.json_lines() {
        assert_eq!((&line["deleted"], &line["code"]), (&false.into(), &"AccessDenied".into()), "{line}");
    }
    assert_eq!(moto.s3get(&host, &url(&b, "small")).success().stdout, b"small");
    // Other buckets are not the host's.
    let other = moto.bucket("iam-other", false);
    moto.s3put(&host, &[&url(&other, "k")], Some(b"k")).fails(77, "access denied");

    // The admin key prunes.
    let out = moto.s3put(&moto.admin, &["--delete", &url(&b, "small"), &url(&b, "big")], None).success();
    assert!(out.json_lines().iter().all(|l| l["deleted"] == true), "{}", String::from_utf8_lossy(&out.stdout));
    moto.s3get(&host, &url(&b, "big")).fails(66, "no such object");
}
