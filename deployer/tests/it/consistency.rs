//! The engine through a proxy that answers as eventually consistent AWS does (reads
//! stale for a window after each write, a new role or security group not found at
//! first, a deleted schedule group still being deleted): a fresh `up`, a changing `up`,
//! and `destroy` followed at once by `up` all converge with no false `NotConverged`.

use std::time::Duration;

use fakes::emulators::Moto;
use fakes::fault_proxy::FaultProxy;

use super::engine::{IMAGE, json};
use super::{root, stderr};

/// At least the 2 s the issue asks for; AWS's own windows are usually shorter.
const STALE: Duration = Duration::from_secs(3);

fn up(endpoint: &str, env: &str) -> serde_json::Value {
    json(
        endpoint,
        &[
            "up", "--env", env, "--image", IMAGE, "--yes", "--output", "json",
        ],
    )
}

fn changes(endpoint: &str, env: &str) -> Vec<String> {
    let plan = json(
        endpoint,
        &["diff", "--env", env, "--image", IMAGE, "--output", "json"],
    );
    plan["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "no-change")
        .map(|s| format!("{} {}", s["action"], s["id"]))
        .collect()
}

#[tokio::test]
async fn fresh_changing_and_destroy_then_up_converge_through_stale_reads() {
    let moto = Moto::start().unwrap();
    let proxy = FaultProxy::eventually_consistent(moto.addr(), STALE).unwrap();
    let endpoint = proxy.endpoint();

    let first = up(&endpoint, "local");
    assert!(
        first["summary"]["created"].as_u64().unwrap() > 10,
        "{first}"
    );
    assert!(proxy.stale_answers() > 0, "the window was in play");

    // A changing up: another task size is a new revision and two schedule updates.
    let dir = tempfile::tempdir().unwrap();
    let bigger = dir.path().join("local.toml");
    let text = std::fs::read_to_string(root().join("infra/envs/local.toml")).unwrap();
    std::fs::write(
        &bigger,
        text.replace("cpu = 256\nmemory = 512", "cpu = 512\nmemory = 1024"),
    )
    .unwrap();
    let bigger = bigger.to_str().unwrap();
    let second = up(&endpoint, bigger);
    assert_eq!(second["summary"]["replaced"], 1, "{second}");
    assert_eq!(second["summary"]["updated"], 3, "{second}");

    // Destroy, then up at once: the deletions are still visible for a while.
    let out = super::engine::deployer(&endpoint, &["destroy", "--env", bigger, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = up(&endpoint, bigger);
    assert!(
        again["summary"]["created"].as_u64().unwrap() > 10,
        "{again}"
    );

    // Settled: moto itself (no proxy) shows nothing left to do.
    assert_eq!(changes(&moto.endpoint(), bigger), Vec::<String>::new());
}
