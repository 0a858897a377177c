//! The command line and config loading, as an operator meets them: bad
//! flags, missing files, unknown keys and bad values get a clear message
//! naming the problem, and a non-zero exit.

use std::process::{Command, Output};

fn resilite(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resilite"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run resilite")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `resilite run` on a config file with `text`; it must fail at start.
fn run_with_config(text: &str, envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = resilite(&["run", "--config", path.to_str().unwrap()], envs);
    assert!(
        !out.status.success(),
        "resilite run should refuse: {}",
        stderr(&out)
    );
    out
}

#[test]
fn cli_help_explains_each_verb() {
    let out = resilite(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run"), "{text}");
    assert!(text.contains("HTTP API"), "{text}");
}

#[test]
fn cli_unknown_flag_is_rejected_with_exit_2() {
    let out = resilite(&["run", "--confg", "x.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--confg"), "{}", stderr(&out));
}

#[test]
fn cli_missing_config_file_names_the_path() {
    let out = resilite(&["run", "--config", "/nonexistent/resilite.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/resilite.toml") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn config_unknown_key_is_an_error_naming_the_key() {
    let out = run_with_config("[http]\ntokn = \"x\"\n", &[]);
    assert!(stderr(&out).contains("tokn"), "{}", stderr(&out));
    let out = run_with_config("[writr]\nmax_batch = 1\n", &[]);
    assert!(stderr(&out).contains("writr"), "{}", stderr(&out));
}

#[test]
fn config_bad_values_are_rejected_naming_key_value_and_range() {
    let cases = [
        ("[writer]\nmax_batch = 0\n", "writer.max_batch"),
        ("[readers]\npool_size = 100000\n", "readers.pool_size"),
        ("[http]\nlisten = \"localhost\"\n", "http.listen"),
        ("[database]\nsynchronous = \"sometimes\"\n", "sometimes"),
        ("[database]\nbusy_timeout = \"soon\"\n", "soon"),
        (
            "[supervisor]\nrestart_window = \"0s\"\n",
            "supervisor.restart_window",
        ),
        ("[http]\nlisten = \"0.0.0.0:7070\"\n", "http.token"),
        ("not toml at all [", "TOML"),
    ];
    for (text, needle) in cases {
        let out = run_with_config(text, &[]);
        assert!(
            stderr(&out).contains(needle),
            "config {text:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn config_environment_override_is_validated_too() {
    let out = run_with_config("", &[("RESILITE_WRITER_MAX_BATCH", "0")]);
    let err = stderr(&out);
    assert!(err.contains("writer.max_batch"), "{err}");
    let out = run_with_config("", &[("RESILITE_HTTP_TOKN", "x")]);
    let err = stderr(&out);
    assert!(
        err.contains("tokn") && err.contains("RESILITE_HTTP_TOKN"),
        "{err}"
    );
}
