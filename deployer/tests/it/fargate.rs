//! Tasks that run for real: the local Fargate (`fakes::fargate`, behind the AWS proxy in
//! front of moto) runs the pushed image under runc with the task definition's rules.
//! README step 8's first run as a task, and an image that cannot be pulled, each read
//! back the way an operator reads them.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use fakes::emulators::{Moto, Registry};
use fakes::fargate::Fargate;
use fakes::fault_proxy::{FaultProxy, Options};
use fakes::generate::TABLE;
use fakes::server::Fakes;
use serde_json::Value;

use super::{moto_config, stderr, stdout};

/// moto behind a proxy that runs tasks, the registry with the job's image, the fakes,
/// and the stack deployed with that image.
struct World {
    proxy: FaultProxy,
    registry: Registry,
    _moto: Moto,
    _fakes: Fakes,
    dir: tempfile::TempDir,
}

impl World {
    fn deployer(&self, args: &[&str]) -> Output {
        let mut all = vec!["--env-dir", self.dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        super::deployer_command(Some(&self.proxy.endpoint()))
            .args(&all)
            .env("DEPLOYER_REGISTRY", self.registry.host())
            .output()
            .unwrap()
    }
}

async fn world() -> World {
    let moto = Moto::start().unwrap();
    let registry = Registry::start().unwrap();
    let mut month = fakes::generate::month(12, 2026, 10);
    month.remove_broken();
    let fakes = Fakes::start(&month.seed).await.unwrap();
    let config = moto_config(&moto.endpoint()).await;
    fakes::aws_seed::seed(&config, &month, TABLE).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(super::root().join("infra/envs/local.toml")).unwrap();
    let port = fakes.url().rsplit(':').next().unwrap().to_owned();
    std::fs::write(
        dir.path().join("local.toml"),
        shipped
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:5000", &registry.host()),
    )
    .unwrap();
    let fargate = Fargate::new(&moto.endpoint(), "us-east-1").expect("runc (make tools)");
    let proxy = FaultProxy::with(
        moto.addr(),
        Options {
            fargate: Some(Arc::clone(&fargate)),
            ..Options::default()
        },
    )
    .unwrap();
    let w = World {
        proxy,
        registry,
        _moto: moto,
        _fakes: fakes,
        dir,
    };
    let binary = super::image::job_binary();
    let pushed = w.deployer(&[
        "push-image",
        "--env",
        "local",
        "--binary",
        binary.to_str().unwrap(),
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let up = w.deployer(&["up", "--env", "local", "--yes"]);
    assert!(up.status.success(), "{}", stderr(&up));
    w
}

async fn wait_stopped(ecs: &aws_sdk_ecs::Client, arn: &str) -> aws_sdk_ecs::types::Task {
    for _ in 0..600 {
        let d = ecs
            .describe_tasks()
            .cluster("qbo-invoice-processor-cluster")
            .tasks(arn)
            .send()
            .await
            .unwrap();
        let t = d.tasks()[0].clone();
        if t.last_status() == Some("STOPPED") {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the task {arn} did not stop within a minute");
}

// Multi-threaded: the fakes answer the task while this thread waits on the deployer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_first_dry_run_passes_as_a_task_and_a_missing_image_says_why() {
    let w = world().await;

    // README step 8: the first run is a dry run, as a task, on a read-only root.
    let run = w.deployer(&[
        "run-task",
        "create",
        "--env",
        "local",
        "--output",
        "json",
        "--",
        "--dry-run",
    ]);
    let out = stdout(&run);
    assert!(
        run.status.success(),
        "exit {:?}\n{out}\n{}",
        run.status.code(),
        stderr(&run)
    );
    let finished: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{out}");
    assert_eq!(finished[0]["dry_run"], true);
    assert_eq!(finished[0]["exit_code"], 0, "{out}");
    // Its report went to /tmp, the task's writable volume.
    assert!(
        out.contains("/tmp/billing_report.html"),
        "the report under /tmp: {out}"
    );

    let ecs = aws_sdk_ecs::Client::new(&moto_config(&w.proxy.endpoint()).await);
    let tasks = w.deployer(&["tasks", "--env", "local"]);
    assert!(tasks.status.success(), "{}", stderr(&tasks));
    assert!(
        stdout(&tasks).contains("--create-invoices --dry-run  exit 0"),
        "the stopped task, read back from the local Fargate: {}",
        stdout(&tasks)
    );

    // An image the registry does not hold: the task never starts, and says why.
    let current = ecs
        .describe_task_definition()
        .task_definition("qbo-invoice-processor")
        .send()
        .await
        .unwrap();
    let def = current.task_definition().unwrap();
    let mut container = def.container_definitions()[0].clone();
    let image = container.image().unwrap().to_owned();
    let missing = format!(
        "{}@sha256:{}",
        image.split('@').next().unwrap(),
        "0".repeat(64)
    );
    container.image = Some(missing);
    let registered = ecs
        .register_task_definition()
        .family("qbo-invoice-processor-missing")
        .set_requires_compatibilities(Some(def.requires_compatibilities().to_vec()))
        .set_network_mode(def.network_mode().cloned())
        .set_cpu(def.cpu().map(str::to_owned))
        .set_memory(def.memory().map(str::to_owned))
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    let family = registered
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    let started = ecs
        .run_task()
        .cluster("qbo-invoice-processor-cluster")
        .task_definition(family)
        .send()
        .await
        .unwrap();
    let arn = started.tasks()[0].task_arn().unwrap().to_owned();
    let stopped = wait_stopped(&ecs, &arn).await;
    assert_eq!(
        stopped.stop_code(),
        Some(&aws_sdk_ecs::types::TaskStopCode::TaskFailedToStart)
    );
    assert!(
        stopped
            .stopped_reason()
            .is_some_and(|r| r.starts_with("CannotPullContainerError")),
        "{:?}",
        stopped.stopped_reason()
    );
}
