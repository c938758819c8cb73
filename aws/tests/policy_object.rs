//! A policy of any size from S3 (`MUSTER_POLICY_OBJECT`): Lambda's
//! environment holds 4 KB in all, so a real policy cannot travel inline.
#![allow(clippy::unwrap_used)]

mod support;

use muster_aws::runtime::config::PolicyObject;
use muster_aws::runtime::wiring::load_policy;

#[tokio::test]
async fn the_policy_is_read_from_its_object_and_a_bad_one_is_refused_by_name() {
    let cfg = support::sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg)
            .force_path_style(true)
            .build(),
    );
    let bucket = support::unique("policy").to_lowercase();
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // Past the environment's 4 KB: the example policy with a long comment.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policies/p3-no-voice.toml"
    ))
    .unwrap();
    let big = format!(
        "{}\n{example}",
        "# padding to pass the 4 KB of the environment\n".repeat(120)
    );
    assert!(big.len() > 4096);
    for (key, body) in [
        ("ok.toml", big.clone()),
        ("bad.toml", "[channel_order]\nP3 = [\"fax\"]\n".to_string()),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let object = |key: &str| PolicyObject {
        bucket: bucket.clone(),
        key: key.into(),
    };
    let got = load_policy(&s3, &object("ok.toml")).await.unwrap();
    assert_eq!(got, muster::policy::Policy::from_toml(&example).unwrap());
    assert_ne!(got, muster::policy::Policy::default());

    let bad = load_policy(&s3, &object("bad.toml"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains(&format!("s3://{bucket}/bad.toml")) && bad.contains("fax"),
        "{bad}"
    );
    let missing = load_policy(&s3, &object("none.toml"))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("none.toml"), "{missing}");
}
