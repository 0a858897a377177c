//! A real `resilite run` process on 127.0.0.1 with its own temp directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A size of a fault-injection test: `default` (sized for CI), or the
/// `SOAK_<NAME>` environment variable that `scripts/soak.sh` sets.
pub fn soak(name: &str, default: i64) -> i64 {
    std::env::var(format!("SOAK_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The free space and the speed of the disk the tests run on are not what
/// they check: every `resilite` they start judges free space against 0%
/// and probes against 600 s (overrides a test's own environment can
/// replace). Those rules have their own tests in `tests/health.rs`.
pub const HOST_DISK_NOT_JUDGED: [(&str, &str); 3] = [
    ("RESILITE_HEALTH_MIN_DISK_FREE_PCT", "0"),
    ("RESILITE_HEALTH_SLOW_READ", "600s"),
    ("RESILITE_HEALTH_SLOW_WRITE", "600s"),
];

/// Run the `resilite` binary with `args` (stdin empty: no terminal) to
/// its end.
pub fn resilite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(args)
        .envs(HOST_DISK_NOT_JUDGED)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What a run printed: stdout, then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
}

/// Write a config with `extra` TOML appended under `[http]` and start the
/// server on a free port, on `dir`'s `data/app.db`.
pub fn start(dir: &TempDir, http_extra: &str) -> Server {
    start_with_env(dir, http_extra, &[])
}

/// [`start`], with environment overrides (`RESILITE_<SECTION>_<KEY>`).
pub fn start_with_env(dir: &TempDir, http_extra: &str, env: &[(&str, &str)]) -> Server {
    let config = dir.path().join("config.toml");
    let db = dir.path().join("data").join("app.db");
    std::fs::write(
        &config,
        format!(
            "[database]\npath = {db:?}\nsynchronous = \"full\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n"
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_resilite"))
        .args(["run", "--config", config.to_str().unwrap()])
        .envs(HOST_DISK_NOT_JUDGED)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn resilite run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let base = line
        .trim()
        .strip_prefix("resilite listening on ")
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("server did not start: stdout {line:?}, stderr:\n{log}")
        })
        .to_string();
    Server {
        child,
        base,
        dir: dir.path().to_path_buf(),
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("app.db")
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
