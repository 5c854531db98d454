//! Against a real moto server: the shared SdkConfig reaches it through the standard
//! endpoint override, and the counter sees every call.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_setup::{Access, AwsOptions, CallCounter};
use fakes::emulators::Moto;

/// The shared loader pointed at moto, with the dummy credentials moto accepts (the
/// test process must not depend on whatever credentials the machine has).
async fn moto_config(moto: &Moto) -> aws_setup::SdkConfig {
    aws_setup::load(&AwsOptions {
        profile: None,
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    })
    .await
    .into_builder()
    .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
        "testing", "testing", None, None, "moto",
    )))
    .build()
}

#[tokio::test]
async fn sdk_config_reaches_moto_and_counter_splits_reads_from_writes() {
    let moto = Moto::start().expect("moto starts");
    let config = moto_config(&moto).await;
    let counter = CallCounter::new();
    let sts = aws_setup::client!(aws_sdk_sts, &config, &counter);

    let me = sts
        .get_caller_identity()
        .send()
        .await
        .expect("moto answers");
    assert_eq!(me.account(), Some("123456789012"));
    sts.assume_role()
        .role_arn("arn:aws:iam::123456789012:role/any")
        .role_session_name("test")
        .send()
        .await
        .expect("moto assumes any role");
    sts.get_caller_identity().send().await.unwrap();

    let rows = counter.snapshot();
    assert_eq!(counter.reads(), 2, "{rows:?}");
    assert_eq!(counter.writes(), 1, "{rows:?}");
    assert_eq!(counter.write_operations(), vec!["STS:AssumeRole"]);
    assert!(
        rows.iter().any(|r| r.operation == "GetCallerIdentity"
            && r.access == Access::Read
            && r.calls == 2)
    );
}
