//! Test support shared by the broker's integration tests: runs the real broker binary on a
//! free port with a fresh data directory, and stops it gracefully or with SIGKILL.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process started by a test. Killed (SIGKILL) on drop if still running.
pub struct BrokerProcess {
    pub port: u16,
    /// The admin HTTP listener's port (/metrics, /health, /ready).
    pub admin_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Two ports nobody listens on right now, for the Kafka and the admin listener. Both are held
/// while their numbers are read: a port bound and released once, twice over, may come back the
/// same, and the broker refuses an admin listener on the Kafka listener's address.
fn two_free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let (a, b) = (bind(), bind());
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

impl BrokerProcess {
    /// Starts a broker on a fresh data directory with `args` added to its command line.
    pub fn start(args: &[&str]) -> BrokerProcess {
        Self::start_in(None, args)
    }

    /// Starts a broker on `data_dir` (for example on a small filesystem the test mounted), or
    /// on a fresh directory when `None`, with `args` added to its command line.
    pub fn start_in(data_dir: Option<PathBuf>, args: &[&str]) -> BrokerProcess {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
        let (port, admin_port) = two_free_ports();
        let mut b = BrokerProcess {
            port,
            admin_port,
            data_dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            log_path: tmp.path().join("broker.log"),
            _tmp: Some(tmp),
        };
        // The ports were free a moment ago; another test may take one first. The broker refuses
        // a port in use ("cannot listen"), so pick others and retry.
        for _ in 0..5 {
            match b.spawn() {
                Ok(()) => return b,
                Err(log) if log.contains("cannot listen") => (b.port, b.admin_port) = two_free_ports(),
                Err(log) => panic!("broker exited during start-up:\n{log}"),
            }
        }
        panic!("no free port for the broker after 5 attempts");
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin listener's address, e.g. for `http_get`.
    pub fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// Starts the process and waits until it is ready; on early exit, returns its log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let log_start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--admin-listen")
            .arg(self.admin())
            .args(&self.extra_args)
            .env("RUST_LOG", std::env::var("BROKER_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start broker binary");
        self.child = Some(child);
        self.wait_ready(log_start)
    }

    /// Waits until this run of the broker has logged that it is ready and accepts connections.
    fn wait_ready(&mut self, log_start: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            let this_run = log.get(log_start..).unwrap_or("");
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exit status {status}\n{this_run}"));
            }
            if this_run.contains("broker ready") && TcpStream::connect(self.bootstrap()).is_ok() {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "broker not ready after 60 s:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGTERM and wait: the broker must exit 0.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "broker exited with {status} after SIGTERM:\n{}", self.log());
                    return;
                }
                assert!(Instant::now() < deadline, "broker did not stop within 30 s of SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker before restarting it");
        if let Err(log) = self.spawn() {
            panic!("broker failed to restart:\n{log}");
        }
    }

    /// The broker's process id while it runs, e.g. to read its memory use from /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Lines of the log that are warnings or errors.
    pub fn problems(&self) -> Vec<String> {
        BufReader::new(self.log().as_bytes())
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a client process run by a test ended.
pub struct ClientRun {
    /// `None` if it ran past its time limit and was killed.
    pub status: Option<std::process::ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `command` with `input` on stdin, collecting its output, and kills it after `timeout`.
pub fn run_client(command: &mut Command, input: &[u8], timeout: Duration) -> ClientRun {
    use std::io::{Read, Write};
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?} (see scripts/ci-deps/): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    ClientRun {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs `python3 <script> <args...>` against `broker` and panics with the script's output and
/// the broker's log unless it exits 0 within `timeout`, or if the broker logged a warning.
pub fn run_python_case(broker: &BrokerProcess, script: &str, args: &[&std::ffi::OsStr], case: &str, timeout: Duration) {
    run_python_case_expecting(broker, script, args, case, timeout, &[]);
}

/// `run_python_case` for a case that provokes warnings: each of `expected` must occur in the
/// broker's warnings, and every warning must contain one of them.
pub fn run_python_case_expecting(
    broker: &BrokerProcess,
    script: &str,
    args: &[&std::ffi::OsStr],
    case: &str,
    timeout: Duration,
    expected: &[&str],
) {
    assert!(Path::new(script).exists(), "{script} is missing");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = run_client(&mut command, b"", timeout);
    let output = format!(
        "--- stdout\n{}--- stderr\n{}--- broker log\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        broker.log()
    );
    match run.status {
        None => panic!("case `{case}` still running after {timeout:?}; killed it\n{output}"),
        Some(s) if !s.success() => panic!("case `{case}` failed with {s}\n{output}"),
        Some(_) => {}
    }
    let problems = broker.problems();
    for e in expected {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "case `{case}`: no warning `{e}` in the broker log\n{output}"
        );
    }
    let unexpected: Vec<&String> = problems.iter().filter(|p| !expected.iter().any(|e| p.contains(e))).collect();
    assert!(unexpected.is_empty(), "case `{case}`: warnings in the broker log: {unexpected:#?}");
}

/// A plain HTTP/1.1 GET: the status code and the body. Enough for the broker's admin listener,
/// which answers one request per connection and closes it.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}
