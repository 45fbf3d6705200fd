//! `reaper demo` on a fresh directory, with no service running.

use crate::{reaper, run, stdout};

#[test]
fn demo_runs_every_job_to_the_end_and_prints_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(reaper(None).args(["demo", "--dir"]).arg(dir.path()));
    assert!(output.status.success());
    let text = stdout(&output);
    for title in [
        "hard: drop sessions older than 30 days",
        "hard: erase every event of user 42",
        "soft: users of the free plan unseen for 180 days",
        "dry run: events older than 90 days",
    ] {
        let line = text
            .lines()
            .find(|line| line.starts_with(title))
            .unwrap_or_else(|| panic!("no summary line for {title}:\n{text}"));
        assert!(line.contains(" done "), "{line}");
    }
    assert!(text.contains("rows would be deleted in"), "{text}");
    assert!(text.contains("last audit entries"), "{text}");
    assert!(text.contains("session retention: 30 days"), "{text}");
    // A second run starts from scratch and succeeds again.
    assert!(
        run(reaper(None).args(["demo", "--dir"]).arg(dir.path()))
            .status
            .success()
    );
}
