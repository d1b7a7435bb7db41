//! The release broker as a child process: a free port, a fresh data directory, readiness from
//! its log, a sampler of its resident memory and disk reads, and a clean stop (SIGTERM).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::constants::{BROKER_READY_TIMEOUT, BROKER_STOP_TIMEOUT, RETENTION_CHECK_INTERVAL_MS, SAMPLE_INTERVAL};

/// One sample of the broker process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// Seconds since the broker started.
    pub t_s: f64,
    pub rss_bytes: u64,
    /// Bytes the process caused to be read from storage (`read_bytes` of /proc/<pid>/io).
    pub read_bytes: u64,
    /// CPU time used so far (user + system), in seconds.
    pub cpu_s: f64,
}

pub struct Broker {
    child: Child,
    pub addr: String,
    /// The admin listener, serving `/metrics`.
    admin: String,
    pub log: PathBuf,
    started: Instant,
    samples: Arc<Mutex<Vec<ProcSample>>>,
    stop_sampler: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

/// CPU time (user + system) of a process in seconds, from /proc/<pid>/stat. USER_HZ is 100 on
/// every Linux architecture this project targets.
pub fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body on a 200 answer.
fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no end of the HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path} on {addr}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The sum over every label set of a Prometheus counter in text exposition format; None if
/// no sample of it is there.
fn sum_counter(text: &str, name: &str) -> Option<u64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // The name must end here: a label set or the value follows.
            let value = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once('}')?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.split_whitespace().next()?.parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// The resident set size and storage reads of a process, from /proc.
pub fn proc_counters(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let read_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some((rss_kb * 1024, read_bytes))
}

impl Broker {
    /// Starts `bin` on a free port with `data_dir` (created fresh), logging to `log`.
    pub fn start(bin: &Path, data_dir: &Path, log: &Path) -> Result<Broker> {
        std::fs::create_dir_all(data_dir)?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = format!("127.0.0.1:{port}");
            // The admin listener (metrics on, as by default) on a free port of its own too.
            let admin_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let admin = format!("127.0.0.1:{admin_port}");
            let out = std::fs::File::create(log)?;
            let child = Command::new(bin)
                .args(["--listen", &addr, "--admin-listen", &admin])
                .args(["--retention-check-interval-ms", &RETENTION_CHECK_INTERVAL_MS.to_string()])
                .arg("--data-dir")
                .arg(data_dir)
                .env("RUST_LOG", "info")
                .stdout(Stdio::from(out.try_clone()?))
                .stderr(Stdio::from(out))
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut b = Broker {
                child,
                addr,
                admin,
                log: log.to_owned(),
                started: Instant::now(),
                samples: Arc::default(),
                stop_sampler: Arc::default(),
                sampler: None,
            };
            loop {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if let Some(status) = b.child.try_wait()? {
                    if text.contains("cannot listen") {
                        break; // the port was taken meanwhile: try another
                    }
                    bail!("the broker exited during start-up ({status}); its log:\n{text}");
                }
                if text.contains("broker ready") && std::net::TcpStream::connect(&b.addr).is_ok() {
                    b.start_sampler();
                    return Ok(b);
                }
                if b.started.elapsed() > BROKER_READY_TIMEOUT {
                    bail!("the broker was not ready after {BROKER_READY_TIMEOUT:?}; its log:\n{text}");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        bail!("no free port for the broker after 5 attempts")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_sampler(&mut self) {
        let (pid, started, samples, stop) = (self.pid(), self.started, self.samples.clone(), self.stop_sampler.clone());
        self.sampler = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Some((rss_bytes, read_bytes)) = proc_counters(pid) {
                    samples.lock().expect("sampler lock").push(ProcSample {
                        t_s: started.elapsed().as_secs_f64(),
                        rss_bytes,
                        read_bytes,
                        cpu_s: proc_cpu_s(pid),
                    });
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        }));
    }

    /// Now: (rss, read_bytes).
    pub fn counters(&self) -> (u64, u64) {
        proc_counters(self.pid()).unwrap_or((0, 0))
    }

    /// Fetch reads that missed the broker's batch cache and went to the log, so far: the sum
    /// of `broker_batch_cache_misses_total` over the shards, from `/metrics`. None if the
    /// admin listener does not answer or the counter is missing.
    pub fn batch_cache_misses(&self) -> Option<u64> {
        let text = http_get(&self.admin, "/metrics").ok()?;
        sum_counter(&text, "broker_batch_cache_misses_total")
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<ProcSample> {
        self.samples.lock().expect("sampler lock").clone()
    }

    /// Seconds since start, the time base of the samples.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// SIGTERM, wait for a clean exit, and return the samples.
    pub fn stop(mut self) -> Result<Vec<ProcSample>> {
        self.stop_sampler.store(true, Ordering::Release);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the broker exited with {status} after SIGTERM; see {}", self.log.display());
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the broker did not stop within {BROKER_STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(std::mem::take(&mut *self.samples.lock().expect("sampler lock")))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_sampler.store(true, Ordering::Release);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sum_counter;

    #[test]
    fn counters_sum_over_their_label_sets_and_only_their_own_name() {
        let text = "# HELP broker_batch_cache_misses_total Reads.\n\
                    # TYPE broker_batch_cache_misses_total counter\n\
                    broker_batch_cache_misses_total{shard=\"0\"} 3\n\
                    broker_batch_cache_misses_total{shard=\"1\"} 4\n\
                    broker_batch_cache_misses_total_other 100\n\
                    broker_batch_cache_hits_total{shard=\"0\"} 9\n";
        assert_eq!(sum_counter(text, "broker_batch_cache_misses_total"), Some(7));
        assert_eq!(sum_counter(text, "broker_batch_cache_hits_total"), Some(9));
        assert_eq!(sum_counter("x 1\n", "broker_batch_cache_misses_total"), None);
        assert_eq!(sum_counter("plain 5\n", "plain"), Some(5));
    }
}
