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
    // The newest eight entries: which jobs they belong to depends on which finished last.
    let audit_lines: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("last audit entries"))
        .skip(2)
        .take_while(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(audit_lines.len(), 8, "{text}");
    for line in audit_lines {
        assert!(
            [
                "session retention: 30 days",
                "erasure request #42",
                "inactive free accounts"
            ]
            .iter()
            .any(|reason| line.ends_with(reason)),
            "{line}"
        );
    }
    // A second run starts from scratch and succeeds again.
    assert!(
        run(reaper(None).args(["demo", "--dir"]).arg(dir.path()))
            .status
            .success()
    );
}
