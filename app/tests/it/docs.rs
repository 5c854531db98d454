//! docs/jobs.md's examples run as written: its ```console block is a transcript
//! (`$ command`, its output, `...` for lines left out), run by trycmd with this build's
//! job against moto and the fakes, holding last month's runs of clients that all bill.

use super::world_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_of_docs_jobs_md_run_as_written() {
    let last = jiff::Zoned::now()
        .in_tz("America/Los_Angeles")
        .unwrap()
        .date()
        .first_of_month()
        .checked_sub(jiff::Span::new().months(1))
        .unwrap();
    let month = fakes::generate::month(20, last.year(), last.month());
    // QBO's per-minute budget lifted: eight runs in a row would otherwise wait out a
    // minute of it (the limits have their own tests).
    let w = world_of(month, |m| {
        m.remove_broken();
        m.seed
            .limits
            .insert("qbo".into(), fakes::control::Limits::default());
    })
    .await;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/jobs.md"),
    )
    .unwrap();
    assert!(
        text.contains("```console\n$ qbo-invoice-processor"),
        "the examples"
    );
    // The file, and beside it `jobs.in/`, the commands' working directory.
    let copy = w.dir.path().join("jobs.md");
    std::fs::write(&copy, &text).unwrap();
    std::fs::create_dir(copy.with_extension("in")).unwrap();
    let env = w.job_env();
    tokio::task::spawn_blocking(move || {
        let cases = trycmd::TestCases::new();
        cases.register_bin(
            "qbo-invoice-processor",
            std::path::Path::new(env!("CARGO_BIN_EXE_qbo-invoice-processor")),
        );
        for (key, value) in env {
            cases.env(key, value);
        }
        cases.case(&copy);
        cases.run();
    })
    .await
    .unwrap();
    // The examples billed every client once, and wrote the dry run's summary.
    let state = w.state().await;
    let invoices = state["invoices"].as_array().unwrap();
    let billable = w.month.invoiced().count();
    assert_eq!(invoices.len(), billable, "{state}");
    let written = w.dir.path().join("jobs.in/summary.html");
    assert!(
        written.is_file(),
        "{}: {:?}",
        written.display(),
        std::fs::read_dir(w.dir.path().join("jobs.in"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}
