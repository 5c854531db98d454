//! The examples of README.md and docs/ run as written: each ```console block is a
//! transcript (`$ command`, then its output, `...` for lines left out and `[..]` for
//! part of a line), run by trycmd with this build's deployer, each file in a sandbox
//! beside the checkout's `infra/`. docs/jobs.md's examples need the SaaS stand-ins and
//! run in the app's tests. An example that needs an AWS account is a ```sh block that
//! says so, and is not run.

use std::path::Path;

use super::root;

#[test]
fn the_examples_of_the_readme_and_the_docs_run_as_written() {
    let sandbox = tempfile::tempdir().unwrap();
    let cases = trycmd::TestCases::new();
    cases.register_bin("deployer", Path::new(env!("CARGO_BIN_EXE_deployer")));
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") && !path.ends_with("jobs.md") {
            files.push(path);
        }
    }
    let mut transcripts = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        transcripts += text.matches("```console").count();
        // The file, and beside it `NAME.in/`, its commands' working directory, where
        // `--env prod` finds the checkout's infra/envs and what they write stays.
        let name = file.file_name().unwrap();
        let copy = sandbox.path().join(name);
        std::fs::write(&copy, &text).unwrap();
        let dir = copy.with_extension("in");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(root().join("infra"), dir.join("infra")).unwrap();
        cases.case(&copy);
    }
    // The README's and deployer.md's offline examples, at least.
    assert!(transcripts >= 6, "{transcripts} console blocks found");
    cases.run();
}
