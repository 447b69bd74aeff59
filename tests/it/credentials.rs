//! The standard AWS credential chain, beyond environment variables: named profiles in
//! the shared files and `credential_process` (how SSO helpers and vaults plug in).

use crate::common::*;

/// Write AWS config files into a fresh dir and return (config, credentials) paths.
fn aws_files(ctx: &Ctx, name: &str, config: &str, credentials: &str) -> (String, String) {
    let dir = ctx.bench.work.join(format!("aws-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let c = dir.join("config");
    let k = dir.join("credentials");
    std::fs::write(&c, config).expect("write config");
    std::fs::write(&k, credentials).expect("write credentials");
    (c.display().to_string(), k.display().to_string())
}

fn without_env_keys(ctx: &Ctx, bin: &str, config: &str, creds: &str) -> std::process::Command {
    let mut c = ctx.cmd(bin);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION")
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", creds)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

#[test]
fn named_profile_from_the_shared_files() {
    let ctx = Ctx::new("profile");
    let b = &ctx.bench;
    let (config, creds) = aws_files(
        &ctx,
        "profile",
        "[profile backup]\nregion = us-east-1\n",
        &format!("[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n", b.access_key, b.secret_key),
    );
    let mut put = without_env_keys(&ctx, "s3put", &config, &creds);
    put.args(["--profile", "backup", &ctx.url("k")]);
    run(put, Some(b"via profile"), TIMEOUT).success();
    // AWS_PROFILE works like --profile.
    let mut get = without_env_keys(&ctx, "s3get", &config, &creds);
    get.env("AWS_PROFILE", "backup").arg(ctx.url("k"));
    assert_eq!(run(get, None, TIMEOUT).success().stdout, b"via profile");
    // A profile that does not exist is a credentials problem, said in one line.
    let mut put = without_env_keys(&ctx, "s3put", &config, &creds);
    put.args(["--profile", "nope", &ctx.url("k2")]);
    run(put, Some(b"x"), TIMEOUT).fails(78, "credentials");
}

#[test]
fn credential_process_profile() {
    let ctx = Ctx::new("credproc");
    let b = &ctx.bench;
    let json = format!(r#"{{"Version": 1, "AccessKeyId": "{}", "SecretAccessKey": "{}"}}"#, b.access_key, b.secret_key);
    let script = ctx.bench.work.join(format!("credproc-{}.sh", std::process::id()));
    std::fs::write(&script, format!("#!/bin/sh\necho '{json}'\n")).expect("write script");
    let made_executable = std::process::Command::new("chmod").arg("+x").arg(&script).status();
    assert!(made_executable.map(|s| s.success()).unwrap_or(false));
    let (config, creds) = aws_files(
        &ctx,
        "credproc",
        &format!("[profile vault]\nregion = us-east-1\ncredential_process = {}\n", script.display()),
        "",
    );
    let mut put = without_env_keys(&ctx, "s3put", &config, &creds);
    put.args(["--profile", "vault", &ctx.url("k")]);
    run(put, Some(b"via credential_process"), TIMEOUT).success();
    let mut get = without_env_keys(&ctx, "s3get", &config, &creds);
    get.args(["--profile", "vault", &ctx.url("k")]);
    assert_eq!(run(get, None, TIMEOUT).success().stdout, b"via credential_process");
}
