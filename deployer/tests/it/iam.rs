//! The deployer as a real account sees it: every call signed as an IAM user that holds
//! exactly what `deployer policy` prints, each authorized by the AWS proxy with IAM's
//! evaluation logic on the resource AWS authorizes it on (`fakes::iam_actions`). The
//! whole cycle runs; then each action of the printed policy is taken away in turn and
//! the calls the cycle made are evaluated again: every one of them must have been
//! needed by some call.

use std::collections::BTreeSet;

use fakes::iam_auth::Evaluated;
use fakes::iam_policy::{Decision, evaluate};
use serde_json::Value;

use super::fargate::world_as;
use super::{moto_config, stderr, stdout};

const ACCOUNT: &str = "123456789012";

/// Authorized by ECR's registry endpoint on `docker push`/`pull` (OCI distribution
/// API), which has no stand-in here: the local registry answers anonymously.
const REGISTRY_PROTOCOL: [&str; 5] = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:CompleteLayerUpload",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
];

/// Needed only with images in ECR: shown by the ECR cycle below, not the local one.
const ECR_ONLY: [&str; 6] = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchGetImage",
    "ecr:DescribeImages",
    "ecr:PutImage",
    "ecr:PutImageScanningConfiguration",
    "ecr:PutImageTagMutability",
];

/// Repairs moto cannot show: it answers UpdateClusterSettings (the cluster's one
/// property, container insights) with a 500, and keeps `scanOnPush` true whatever
/// PutImageScanningConfiguration sets (moto 5.2.5), so neither drift can be made.
const NOT_ON_MOTO: [&str; 2] = [
    "ecs:UpdateClusterSettings",
    "ecr:PutImageScanningConfiguration",
];

/// An IAM user's access key, and the policy documents it holds.
pub(super) struct Granted {
    pub(super) id: String,
    pub(super) secret: String,
    pub(super) documents: Vec<Value>,
}

/// README step 3 for `user`, run by the account's root through the proxy at
/// `endpoint` (IAM's quotas held): `deployer policy ENV_ARGS --out-dir`, then each
/// printed `aws iam` command, then an access key.
pub(super) async fn grant_printed_policy(endpoint: &str, env_args: &[&str], user: &str) -> Granted {
    let dir = tempfile::tempdir().unwrap();
    let out = super::deployer_command(None)
        .args(["policy", "--account", ACCOUNT, "--user", user, "--out-dir"])
        .arg(dir.path())
        .args(env_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let iam = aws_sdk_iam::Client::new(&moto_config(endpoint).await);
    iam.create_user().user_name(user).send().await.unwrap();
    let documents = run_policy_commands(&iam, &stdout(&out)).await;
    let key = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    Granted {
        id: key.access_key_id().to_owned(),
        secret: key.secret_access_key().to_owned(),
        documents,
    }
}

/// Runs the `aws iam create-policy` and `attach-user-policy` lines `deployer policy`
/// printed, with the SDK; returns the documents created.
pub(super) async fn run_policy_commands(iam: &aws_sdk_iam::Client, text: &str) -> Vec<Value> {
    let mut created = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .map(|i| words[i + 1].to_owned())
        };
        match words.get(..3) {
            Some(["aws", "iam", "create-policy"]) => {
                let file = arg("--policy-document").unwrap();
                let document =
                    std::fs::read_to_string(file.strip_prefix("file://").unwrap()).unwrap();
                iam.create_policy()
                    .policy_name(arg("--policy-name").unwrap())
                    .policy_document(&document)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{line}: {e:?}"));
                created.push(serde_json::from_str::<Value>(&document).unwrap());
            }
            Some(["aws", "iam", "attach-user-policy"]) => {
                iam.attach_user_policy()
                    .user_name(arg("--user-name").unwrap())
                    .policy_arn(arg("--policy-arn").unwrap())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{line}: {e:?}"));
            }
            _ => {}
        }
    }
    assert!(!created.is_empty(), "no create-policy line in: {text}");
    created
}

/// Each `(statement Sid, action)` of `documents` that some allowed call of `caller`
/// needed: without it alone, that call is denied.
fn needed(documents: &[Value], log: &[Evaluated], caller: &str) -> BTreeSet<(String, String)> {
    let asked: Vec<&Evaluated> = log
        .iter()
        .filter(|e| e.caller == caller && e.allowed)
        .collect();
    let mut found = BTreeSet::new();
    for (d, document) in documents.iter().enumerate() {
        for (s, statement) in document["Statement"].as_array().unwrap().iter().enumerate() {
            for action in statement["Action"].as_array().unwrap() {
                let mut without = documents.to_vec();
                let statements = without[d]["Statement"].as_array_mut().unwrap();
                let actions = statements[s]["Action"].as_array_mut().unwrap();
                actions.retain(|a| a != action);
                if actions.is_empty() {
                    statements.remove(s);
                }
                if asked
                    .iter()
                    .any(|e| evaluate(without.iter(), &e.request) != Decision::Allow)
                {
                    found.insert((
                        statement["Sid"].as_str().unwrap().to_owned(),
                        action.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    found
}

fn every_action(documents: &[Value]) -> BTreeSet<(String, String)> {
    documents
        .iter()
        .flat_map(|d| d["Statement"].as_array().unwrap().clone())
        .flat_map(|s| {
            let sid = s["Sid"].as_str().unwrap().to_owned();
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (sid.clone(), a.as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a person in the console might change, which only a repair writes back: the
/// `managed-by` tag off resources of each service, a port opened in the tasks' group,
/// a policy attached to the task role and its trust and description changed, the
/// table's billing mode. Returns the tasks' group.
async fn drift_as_root(endpoint: &str) -> String {
    let config = moto_config(endpoint).await;
    let arn = |service: &str, rest: &str| format!("arn:aws:{service}:us-east-1:{ACCOUNT}:{rest}");
    let app = "qbo-invoice-processor";
    let sns = aws_sdk_sns::Client::new(&config);
    sns.untag_resource()
        .resource_arn(arn("sns", &format!("{app}-alerts")))
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    sns.set_topic_attributes()
        .topic_arn(arn("sns", &format!("{app}-alerts")))
        .attribute_name("DisplayName")
        .attribute_value("changed by hand")
        .send()
        .await
        .unwrap();
    aws_sdk_dynamodb::Client::new(&config)
        .untag_resource()
        .resource_arn(arn("dynamodb", &format!("table/{app}-job-state")))
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    let events = aws_sdk_eventbridge::Client::new(&config);
    let rules = events.list_rules().name_prefix(app).send().await.unwrap();
    let rule = rules
        .rules()
        .first()
        .and_then(|r| r.arn())
        .unwrap()
        .to_owned();
    events
        .untag_resource()
        .resource_arn(rule)
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    let scheduler = aws_sdk_scheduler::Client::new(&config);
    let groups = scheduler.list_schedule_groups().send().await.unwrap();
    let group = groups
        .schedule_groups()
        .iter()
        .find(|g| g.name() != Some("default"))
        .and_then(|g| g.arn())
        .unwrap()
        .to_owned();
    scheduler
        .untag_resource()
        .resource_arn(group)
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let alarms = cloudwatch
        .describe_alarms()
        .alarm_name_prefix(app)
        .send()
        .await
        .unwrap();
    let alarm = alarms.metric_alarms()[0].alarm_arn().unwrap().to_owned();
    cloudwatch
        .untag_resource()
        .resource_arn(alarm)
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let definition = ecs
        .describe_task_definition()
        .task_definition(app)
        .send()
        .await
        .unwrap();
    ecs.untag_resource()
        .resource_arn(
            definition
                .task_definition()
                .unwrap()
                .task_definition_arn()
                .unwrap(),
        )
        .tag_keys("managed-by")
        .send()
        .await
        .unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let groups = ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:app")
                .values(app)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group = groups.security_groups()[0].group_id().unwrap().to_owned();
    ec2.delete_tags()
        .resources(&group)
        .tags(aws_sdk_ec2::types::Tag::builder().key("managed-by").build())
        .send()
        .await
        .unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("10.0.0.0/8")
        .send()
        .await
        .unwrap();
    let iam = aws_sdk_iam::Client::new(&config);
    let role = "ecsTaskRole-QBOInvoiceProcessor";
    let extra = iam
        .create_policy()
        .policy_name("added-by-hand")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListAllMyBuckets","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name(role)
        .policy_arn(extra.policy().unwrap().arn().unwrap())
        .send()
        .await
        .unwrap();
    iam.update_role()
        .role_name(role)
        .description("changed by hand")
        .send()
        .await
        .unwrap();
    iam.update_assume_role_policy()
        .role_name(role)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    aws_sdk_dynamodb::Client::new(&config)
        .update_table()
        .table_name(format!("{app}-job-state"))
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::Provisioned)
        .provisioned_throughput(
            aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                .read_capacity_units(1)
                .write_capacity_units(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    group
}

/// The deploy lease, held by someone else for `seconds` more.
async fn hold_lease(endpoint: &str, seconds: i64) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    aws_sdk_dynamodb::Client::new(&moto_config(endpoint).await)
        .put_item()
        .table_name("qbo-invoice-processor-job-state")
        .item("pk", S("lock/deployer".into()))
        .item(
            "holder",
            S("`up` by arn:aws:iam::123456789012:user/alice on laptop (pid 7)".into()),
        )
        .item("since", S("2026-12-03T09:00:00Z".into()))
        .item(
            "until",
            N((jiff::Timestamp::now().as_second() + seconds).to_string()),
        )
        .send()
        .await
        .unwrap();
}

/// A network interface in `group`, as a task that has not let go of it yet.
async fn interface_in(endpoint: &str, group: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&moto_config(endpoint).await);
    let subnets = ec2.describe_subnets().send().await.unwrap();
    let eni = ec2
        .create_network_interface()
        .subnet_id(subnets.subnets()[0].subnet_id().unwrap())
        .groups(group)
        .send()
        .await
        .unwrap();
    eni.network_interface()
        .unwrap()
        .network_interface_id()
        .unwrap()
        .to_owned()
}

// `--env local` right after the command, before any `--`.
fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [&args[..1], &["--env", "local"][..], &args[1..]].concat()
}

// Multi-threaded: the fakes answer the tasks while this thread waits on the deployer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployers_whole_cycle_runs_as_a_user_holding_exactly_the_printed_policy() {
    // push-image and up, as the user (README steps 3 to 6).
    let w = world_as(|_| {}, Some("deployer")).await;
    let user = format!("arn:aws:iam::{ACCOUNT}:user/deployer");
    let ok = |args: &[&str]| {
        let out = w.deployer(args);
        assert!(
            out.status.success(),
            "{args:?} as the user: exit {:?}\n{}\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
        out
    };
    ok(&with(&["diff"]));
    ok(&with(&["status"]));
    ok(&with(&["cost"]));
    ok(&with(&["run-task", "create", "--", "--dry-run"]));
    ok(&with(&["tasks"]));
    ok(&with(&["logs", "--since", "1h"]));
    ok(&with(&["verify"]));
    // Another image deployed, then rolled back.
    let probe = w.perl_image();
    ok(&with(&["up", "--image", &probe, "--yes"]));
    ok(&with(&["rollback", "--yes"]));
    // A real run started without waiting, and stopped by hand.
    let started = ok(&with(&[
        "run-task",
        "create",
        "--no-wait",
        "--",
        "--period",
        "2026-10",
    ]));
    let task = stdout(&started);
    let id = task.trim().rsplit('/').next().unwrap().to_owned();
    ok(&with(&["tasks", "--stop", &id]));
    // Changes by hand, put back (adopting what lost its tag) once another's lease ends.
    let group = drift_as_root(&w.proxy.endpoint()).await;
    // Held until the `up` says it waits for it, then let go by its holder, however long
    // the `up` takes to get there.
    hold_lease(&w.proxy.endpoint(), 120).await;
    let up = w
        .command(&with(&["up", "--yes", "--adopt"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let endpoint = w.proxy.endpoint();
    let (waited, repaired, said) = super::when_said(
        up,
        "held by `up` by arn:aws:iam::123456789012:user/alice",
        Box::pin(async {
            aws_sdk_dynamodb::Client::new(&moto_config(&endpoint).await)
                .delete_item()
                .table_name("qbo-invoice-processor-job-state")
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("lock/deployer".into()),
                )
                .send()
                .await
                .unwrap();
        }),
    )
    .await;
    assert!(waited && repaired.status.success(), "{said}");
    let again = ok(&with(&["diff"]));
    assert!(stdout(&again).contains("No changes"), "{}", stdout(&again));
    // destroy while a network interface still holds the tasks' group: it waits, says
    // what holds it, and goes on once it is gone.
    let eni = interface_in(&w.proxy.endpoint(), &group).await;
    let destroy = w
        .command(&with(&["destroy", "--yes"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (waited, destroyed, said) = super::when_said(
        destroy,
        "waiting for security group",
        Box::pin(async {
            aws_sdk_ec2::Client::new(&moto_config(&endpoint).await)
                .delete_network_interface()
                .network_interface_id(&eni)
                .send()
                .await
                .unwrap();
        }),
    )
    .await;
    assert!(waited && destroyed.status.success(), "{said}");

    let log = w.proxy.authorizer().evaluated();
    let denied: Vec<String> = log
        .iter()
        .filter(|e| !e.allowed)
        .map(|e| format!("{} on {}", e.request.action, e.request.resource))
        .collect();
    assert_eq!(denied, Vec::<String>::new(), "nothing was refused");

    // Every action of the printed policy was needed by some call of the cycle.
    let documents = &w.key.as_ref().unwrap().documents;
    let needed = needed(documents, &log, &user);
    let unneeded: Vec<(String, String)> = every_action(documents)
        .into_iter()
        .filter(|a| !needed.contains(a))
        .filter(|(_, action)| {
            !REGISTRY_PROTOCOL.contains(&action.as_str())
                && !ECR_ONLY.contains(&action.as_str())
                && !NOT_ON_MOTO.contains(&action.as_str())
        })
        .collect();
    assert_eq!(
        unneeded,
        Vec::<(String, String)>::new(),
        "actions no call of the cycle needed"
    );
}

/// The cycle with images in ECR (`registry.kind = "ecr"`), as the user: push-image makes
/// the repository and takes a registry token (the push itself needs ECR's registry,
/// which has no stand-in: the images are put with the ECR API, as that push would),
/// then up, another image, rollback, a repair, destroy. Every ECR action of the printed
/// policy but the registry protocol's (and one repair moto cannot show) is needed by
/// one of its calls.
#[tokio::test]
async fn with_images_in_ecr_the_user_needs_each_ecr_action_it_holds() {
    let moto = fakes::emulators::Moto::start().unwrap();
    let proxy =
        fakes::fault_proxy::FaultProxy::with(moto.addr(), fakes::fault_proxy::Options::default())
            .unwrap();
    let endpoint = proxy.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("ecr.toml");
    let text = std::fs::read_to_string(super::root().join("infra/envs/local.toml"))
        .unwrap()
        .replace(
            "kind = \"local\"\nurl = \"127.0.0.1:5000\"",
            "kind = \"ecr\"",
        );
    assert!(text.contains("kind = \"ecr\""));
    std::fs::write(&env_file, text).unwrap();
    let env = env_file.to_str().unwrap();
    let Granted {
        id,
        secret,
        documents,
    } = grant_printed_policy(&endpoint, &["--env", env], "deployer").await;
    let run = |args: &[&str]| {
        super::deployer_command(Some(&endpoint))
            .args(args)
            .args(["--env", env])
            .env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    };
    let pushed = run(&["push-image", "--binary", "/usr/bin/true"]);
    // It got as far as the registry itself (the repository made, the token taken).
    assert!(
        !pushed.status.success()
            && stderr(&pushed).contains(&format!(
                "cannot check for a blob in {ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/"
            )),
        "{}",
        stderr(&pushed)
    );
    let ecr = aws_sdk_ecr::Client::new(&moto_config(&endpoint).await);
    let mut images = Vec::new();
    for n in 1..=2 {
        let digest = super::put_ecr_image(&ecr, n).await;
        images.push(format!(
            "{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/qbo-invoice-processor@{digest}"
        ));
    }
    ok(&["up", "--image", &images[0], "--yes"]);
    ok(&["up", "--image", &images[1], "--yes"]);
    ok(&["rollback", "--yes"]);
    // Tag mutability changed by hand: put back.
    ecr.put_image_tag_mutability()
        .repository_name("qbo-invoice-processor")
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Mutable)
        .send()
        .await
        .unwrap();
    ok(&["up", "--yes"]);
    // The repository outlives a destroy while it holds images, unless asked.
    ok(&["destroy", "--yes"]);
    ok(&["destroy", "--yes", "--include-images"]);

    let log = proxy.authorizer().evaluated();
    let denied: Vec<String> = log
        .iter()
        .filter(|e| !e.allowed)
        .map(|e| format!("{} on {}", e.request.action, e.request.resource))
        .collect();
    assert_eq!(denied, Vec::<String>::new(), "nothing was refused");
    let needed = needed(
        &documents,
        &log,
        &format!("arn:aws:iam::{ACCOUNT}:user/deployer"),
    );
    let unneeded: Vec<(String, String)> = every_action(&documents)
        .into_iter()
        .filter(|(_, action)| action.starts_with("ecr:"))
        .filter(|a| {
            !needed.contains(a)
                && !REGISTRY_PROTOCOL.contains(&a.1.as_str())
                && !NOT_ON_MOTO.contains(&a.1.as_str())
        })
        .collect();
    assert_eq!(
        unneeded,
        Vec::<(String, String)>::new(),
        "ECR actions no call needed"
    );
}
