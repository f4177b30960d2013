//! Smoke test of the benchmark scripts (`scripts/bench.sh` runs them; the
//! tests never run the benchmarks themselves): every Python file parses,
//! the shell scripts pass `bash -n`, and the AWS CLI baseline prints its
//! usage. Cheap, and it catches a broken script before someone needs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

#[test]
fn python_benchmark_scripts_parse() {
    let mut files = files_with_ext(&repo().join("benches"), "py");
    files.extend(files_with_ext(&repo().join("benches/baselines"), "py"));
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    for expected in [
        "agent_bench.py",
        "benchlib.py",
        "compare.py",
        "report_pure.py",
        "b_boto3_naive.py",
        "c_boto3_careful.py",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    for file in &files {
        // ast.parse, not py_compile: nothing is written into the repo.
        let out = Command::new("python3")
            .args([
                "-c",
                "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])",
            ])
            .arg(file)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn shell_benchmark_scripts_parse_and_baseline_a_prints_usage() {
    for script in ["scripts/bench.sh", "benches/baselines/a_awscli_loop.sh"] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(repo().join(script))
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("bash")
        .arg(repo().join("benches/baselines/a_awscli_loop.sh"))
        .arg("--help")
        .output()
        .expect("bash runs");
    assert!(out.status.success());
    let usage = String::from_utf8_lossy(&out.stdout);
    assert!(
        usage.contains("Usage: a_awscli_loop.sh FILE.env PREFIX"),
        "{usage}"
    );
    // Without arguments it is a usage error, not a run against AWS.
    let out = Command::new("bash")
        .arg(repo().join("benches/baselines/a_awscli_loop.sh"))
        .output()
        .expect("bash runs");
    assert_eq!(out.status.code(), Some(2));
}
