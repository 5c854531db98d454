//! Puts the git commit this deployer was built from into `--version`.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    // Outside a git checkout (a source tarball) there is no commit to name.
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .map_or_else(|| "commit unknown".to_owned(), |c| format!("commit {c}"));
    println!("cargo:rustc-env=DEPLOYER_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
