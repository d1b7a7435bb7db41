//! A broker as a child process: a free port, a fresh data directory, readiness, a sampler of
//! its resident memory, disk reads and CPU time, and a clean stop (SIGTERM).
//!
//! Ours is started with its own flags and is ready when its log says so. A peer (another
//! Kafka-compatible broker, or another build of ours) is started from a command line with
//! placeholders (`Broker::start_peer`) and is ready when it answers a Kafka request.

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
    /// The machine's CPU pressure so far: microseconds in which some runnable task waited for a
    /// CPU (`some total` of /proc/pressure/cpu); None without PSI.
    pub cpu_pressure_us: Option<u64>,
    /// The machine's idle CPU time so far, in seconds (see `machine_idle_s`).
    pub machine_idle_s: Option<f64>,
    /// Bytes that had arrived on the Kafka listener's connections and that the broker had not
    /// read yet (their receive queues); None if /proc/net/tcp could not be read.
    pub unread_bytes: Option<u64>,
    /// Milliseconds the data directory's disk has had requests in flight so far (see
    /// `disk_busy_ms`).
    pub disk_busy_ms: Option<u64>,
}

pub struct Broker {
    child: Child,
    /// What was started: our binary's path, or the peer's command line as run.
    pub program: String,
    pub addr: String,
    /// Our admin listener, serving `/metrics`; a peer has none the harness knows of.
    admin: Option<String>,
    /// Whether an exit status other than success after SIGTERM is an error: it is for ours,
    /// which makes everything durable and exits 0; a peer's shutdown is its own business.
    strict_exit: bool,
    pub log: PathBuf,
    started: Instant,
    samples: Arc<Mutex<Vec<ProcSample>>>,
    /// The device holding the data directory, whose busy time the samples take.
    device: Option<(u64, u64)>,
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

/// Microseconds in which some runnable task on the machine waited for a CPU, from the `some`
/// line of /proc/pressure/cpu (Linux PSI); None where the kernel has no PSI.
pub fn cpu_pressure_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The machine's idle CPU time so far, in seconds over all CPUs, from /proc/stat; None if it
/// cannot be read.
pub fn machine_idle_s() -> Option<f64> {
    idle_s_of(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Idle and iowait time of the `cpu` line of a /proc/stat text (`cpu user nice system idle
/// iowait ...`, in USER_HZ ticks of 1/100 s), in seconds. A CPU in iowait has nothing to run:
/// it counts as idle.
fn idle_s_of(stat: &str) -> Option<f64> {
    let mut ticks = stat.lines().find(|l| l.starts_with("cpu "))?.split_whitespace().skip(4);
    let idle: f64 = ticks.next()?.parse().ok()?;
    let iowait: f64 = ticks.next()?.parse().ok()?;
    Some((idle + iowait) / 100.0)
}

/// Milliseconds device `(major, minor)` has spent with requests in flight so far (`io_ticks`,
/// the 13th field of its line in /proc/diskstats); None if it cannot be read.
pub fn disk_busy_ms(device: (u64, u64)) -> Option<u64> {
    busy_ms_of(&std::fs::read_to_string("/proc/diskstats").ok()?, device)
}

/// `io_ticks` of device `(major, minor)` in a /proc/diskstats text (`major minor name reads
/// ... writes ... in_flight io_ticks weighted_ticks ...`).
fn busy_ms_of(diskstats: &str, (major, minor): (u64, u64)) -> Option<u64> {
    diskstats.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let this = (f.first()?.parse::<u64>().ok()?, f.get(1)?.parse::<u64>().ok()?);
        if this != (major, minor) {
            return None;
        }
        f.get(12)?.parse().ok()
    })
}

/// Bytes received on established TCP connections to local `port` that their process has
/// not read yet: the sum of the receive queues in /proc/net/tcp and /proc/net/tcp6. None if
/// neither table can be read.
pub fn unread_bytes(port: u16) -> Option<u64> {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    (!tables.is_empty()).then(|| tables.iter().map(|t| unread_in(t, port)).sum())
}

/// The receive queues of the established connections to local `port` in one
/// /proc/net/tcp-format table (`sl local_address rem_address st tx_queue:rx_queue ...`, the
/// numbers in hex; state 01 is ESTABLISHED).
fn unread_in(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            if local_port != port || *f.get(3)? != "01" {
                return None;
            }
            u64::from_str_radix(f.get(4)?.split_once(':')?.1, 16).ok()
        })
        .sum()
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
    /// A broker process just spawned, not yet sampled.
    fn spawned(
        child: Child,
        program: String,
        addr: String,
        admin: Option<String>,
        strict_exit: bool,
        log: &Path,
        data_dir: &Path,
    ) -> Broker {
        Broker {
            device: crate::limits::device_of(data_dir),
            child,
            program,
            addr,
            admin,
            strict_exit,
            log: log.to_owned(),
            started: Instant::now(),
            samples: Arc::default(),
            stop_sampler: Arc::default(),
            sampler: None,
        }
    }

    /// Starts `bin` on a free port with `data_dir` (created fresh), logging to `log`.
    pub fn start(bin: &Path, data_dir: &Path, log: &Path) -> Result<Broker> {
        std::fs::create_dir_all(data_dir)?;
        for _ in 0..5 {
            // The admin listener (metrics on, as by default) on a free port of its own too: both
            // held at once while their numbers are read, so they differ (the broker refuses an
            // admin listener on the Kafka listener's address).
            let kafka = std::net::TcpListener::bind("127.0.0.1:0")?;
            let admin_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let (port, admin_port) = (kafka.local_addr()?.port(), admin_listener.local_addr()?.port());
            drop((kafka, admin_listener));
            let addr = format!("127.0.0.1:{port}");
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
            let mut b = Broker::spawned(child, bin.display().to_string(), addr, Some(admin), true, log, data_dir);
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

    /// Starts a peer from `command`, run by `sh -c 'exec …'` so that the process the harness
    /// samples and stops is the broker itself. `{addr}` (127.0.0.1:port), `{host}`, `{port}`
    /// and `{data_dir}` (created fresh) are replaced first. Ready when it answers an
    /// ApiVersions request on the port.
    pub fn start_peer(command: &str, data_dir: &Path, log: &Path) -> Result<Broker> {
        std::fs::create_dir_all(data_dir)?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = format!("127.0.0.1:{port}");
            let line = expand_peer_command(command, port, data_dir);
            let out = std::fs::File::create(log)?;
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {line}"))
                .current_dir(data_dir)
                .stdout(Stdio::from(out.try_clone()?))
                .stderr(Stdio::from(out))
                .spawn()
                .with_context(|| format!("starting the peer: {line}"))?;
            let mut b = Broker::spawned(child, line.clone(), addr, None, false, log, data_dir);
            loop {
                if let Some(status) = b.child.try_wait()? {
                    // Another process took the free port meanwhile: try another. A peer's
                    // message for that is its own, so the port itself is asked.
                    if std::net::TcpListener::bind(&b.addr).is_err() {
                        break;
                    }
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    bail!("the peer exited during start-up ({status}): {line}\nits output:\n{text}");
                }
                if answers_api_versions(&b.addr) {
                    b.start_sampler();
                    return Ok(b);
                }
                if b.started.elapsed() > BROKER_READY_TIMEOUT {
                    bail!("the peer did not answer on {} within {BROKER_READY_TIMEOUT:?}: {line}", b.addr);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        bail!("no free port for the peer after 5 attempts")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_sampler(&mut self) {
        let (pid, started, samples, stop) = (self.pid(), self.started, self.samples.clone(), self.stop_sampler.clone());
        let device = self.device;
        let port = self.addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
        self.sampler = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Some((rss_bytes, read_bytes)) = proc_counters(pid) {
                    samples.lock().expect("sampler lock").push(ProcSample {
                        t_s: started.elapsed().as_secs_f64(),
                        rss_bytes,
                        read_bytes,
                        cpu_s: proc_cpu_s(pid),
                        cpu_pressure_us: cpu_pressure_us(),
                        machine_idle_s: machine_idle_s(),
                        unread_bytes: port.and_then(unread_bytes),
                        disk_busy_ms: device.and_then(disk_busy_ms),
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
        let text = http_get(self.admin.as_deref()?, "/metrics").ok()?;
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
                if self.strict_exit && !status.success() {
                    bail!("the broker exited with {status} after SIGTERM; see {}", self.log.display());
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                if self.strict_exit {
                    bail!("the broker did not stop within {BROKER_STOP_TIMEOUT:?} of SIGTERM");
                }
                let _ = self.child.wait();
                break;
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

/// `command` with its placeholders replaced.
fn expand_peer_command(command: &str, port: u16, data_dir: &Path) -> String {
    command
        .replace("{addr}", &format!("127.0.0.1:{port}"))
        .replace("{host}", "127.0.0.1")
        .replace("{port}", &port.to_string())
        .replace("{data_dir}", &data_dir.display().to_string())
}

/// Whether a Kafka broker on `addr` answers an ApiVersions v0 request with a frame carrying
/// its correlation id. A listening port alone is not enough: a broker may accept connections
/// before it can serve them.
fn answers_api_versions(addr: &str) -> bool {
    use std::io::{Read, Write};
    const CORRELATION_ID: i32 = 0x6861_726e;
    let probe = || -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        let client_id = b"bench-harness";
        // Header v1: api_key 18 (ApiVersions), api_version 0, correlation id, client id; no body.
        let mut request = Vec::new();
        request.extend_from_slice(&18i16.to_be_bytes());
        request.extend_from_slice(&0i16.to_be_bytes());
        request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        request.extend_from_slice(client_id);
        stream.write_all(&(request.len() as i32).to_be_bytes())?;
        stream.write_all(&request)?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head)?;
        let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        Ok(size >= 4 && correlation == CORRELATION_ID)
    };
    probe().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::{
        answers_api_versions, busy_ms_of, expand_peer_command, idle_s_of, machine_idle_s, sum_counter, unread_bytes, unread_in, Broker,
    };
    use std::io::{Read, Write};
    use std::path::Path;
    use std::time::Instant;

    /// Idle time is the `cpu` line's idle and iowait ticks, not another CPU's line or field.
    #[test]
    fn idle_time_is_idle_and_iowait_of_all_cpus() {
        let stat = "cpu  100 5 50 7000 300 0 20 0 0 0\ncpu0 50 2 25 3400 100 0 10 0 0 0\nintr 1 2 3\n";
        assert_eq!(idle_s_of(stat), Some(73.0));
        assert_eq!(idle_s_of("cpu0 1 2 3 4 5\n"), None, "no all-CPU line");
        assert_eq!(idle_s_of("cpu  1 2 3\n"), None, "no idle or iowait field");
        // This machine's own counter exists and only grows.
        let a = machine_idle_s().expect("/proc/stat has a cpu line");
        let b = machine_idle_s().expect("/proc/stat has a cpu line");
        assert!(b >= a, "{b} < {a}");
    }

    #[test]
    fn disk_busy_time_is_io_ticks_of_the_devices_own_line() {
        // Two lines of this machine's /proc/diskstats; io_ticks is the 13th field.
        let stats = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                     254       0 vda 15299435 473972 3737406315 32911682 313177439 98276191 32039778822 \
                     198280633 0 22455408 250681054 10394401 4401886 32297985664 13155461 62219518 6333276\n \
                     254       1 vda1 5 0 40 1 7 0 56 2 0 9 3\n";
        assert_eq!(busy_ms_of(stats, (254, 0)), Some(22_455_408));
        assert_eq!(busy_ms_of(stats, (254, 1)), Some(9), "a partition's own line");
        assert_eq!(busy_ms_of(stats, (7, 0)), Some(0));
        assert_eq!(busy_ms_of(stats, (8, 0)), None, "no such device");
        assert_eq!(busy_ms_of("254 0 vda 1 2 3\n", (254, 0)), None, "a line too short");
    }

    #[test]
    fn a_peer_command_gets_its_address_port_and_directory() {
        let line = expand_peer_command(
            "tansu broker --kafka-listener-url tcp://{addr} --storage-engine sqlite://{data_dir}/t.db --port {port} --host {host}",
            19092,
            Path::new("/data/run-1"),
        );
        assert_eq!(
            line,
            "tansu broker --kafka-listener-url tcp://127.0.0.1:19092 --storage-engine sqlite:///data/run-1/t.db --port 19092 --host 127.0.0.1"
        );
    }

    /// A one-connection server that reads one request frame and answers with `answer(request)`.
    fn serve_once(answer: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut size = [0u8; 4];
            s.read_exact(&mut size).unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
            s.read_exact(&mut request).unwrap();
            let _ = s.write_all(&answer(&request));
        });
        addr
    }

    #[test]
    fn a_peer_is_ready_only_when_it_answers_its_request() {
        // An answer with the request's correlation id (bytes 4..8 of the request header).
        let addr = serve_once(|req| {
            let mut frame = 6i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&req[4..8]);
            frame.extend_from_slice(&0i16.to_be_bytes());
            frame
        });
        assert!(answers_api_versions(&addr));
        // Another correlation id, or a connection closed without an answer, is not ready.
        let addr = serve_once(|_| [4i32.to_be_bytes(), 7i32.to_be_bytes()].concat());
        assert!(!answers_api_versions(&addr));
        let addr = serve_once(|_| Vec::new());
        assert!(!answers_api_versions(&addr));
        // Nobody listening.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(!answers_api_versions(&format!("127.0.0.1:{port}")));
    }

    /// A stand-in peer: answers every request frame with its correlation id, as ApiVersions
    /// would, on the port it is given.
    const FAKE_PEER: &str = "import socket, struct, sys\n\
        s = socket.socket()\n\
        s.bind(('127.0.0.1', int(sys.argv[1])))\n\
        s.listen()\n\
        while True:\n\
        \x20   c, _ = s.accept()\n\
        \x20   n = struct.unpack('>i', c.recv(4, socket.MSG_WAITALL))[0]\n\
        \x20   r = c.recv(n, socket.MSG_WAITALL)\n\
        \x20   c.sendall(struct.pack('>i', 6) + r[4:8] + bytes(2))\n\
        \x20   c.close()\n";

    #[test]
    fn a_peer_starts_from_its_command_is_sampled_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake_peer.py");
        std::fs::write(&script, FAKE_PEER).unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("peer.log");
        let peer = Broker::start_peer(&format!("python3 {} {{port}}", script.display()), &data, &log)
            .unwrap_or_else(|e| panic!("{e:#}; log: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        assert!(peer.addr.starts_with("127.0.0.1:"));
        // The command as run, its port filled in.
        assert_eq!(
            peer.program,
            format!("python3 {} {}", script.display(), &peer.addr["127.0.0.1:".len()..])
        );
        assert!(data.is_dir(), "the peer's directory is created");
        // `exec`: the process started is the peer itself, so its samples are the peer's.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", peer.pid())).unwrap();
        assert!(comm.starts_with("python3"), "{comm}");
        assert!(peer.batch_cache_misses().is_none(), "a peer has no metrics the harness knows");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while peer.samples().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let sample = peer.samples().first().copied().expect("the peer is sampled");
        assert!(sample.rss_bytes > 0, "{sample:?}");
        // Killed by SIGTERM is a clean enough end for a peer.
        peer.stop().unwrap();
    }

    #[test]
    fn a_peer_that_exits_at_start_up_is_an_error_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("peer.log");
        let err = Broker::start_peer("echo no such storage engine; exit 3", &dir.path().join("d"), &log)
            .err()
            .expect("a peer that exits does not start");
        let text = format!("{err:#}");
        assert!(
            text.contains("exited during start-up") && text.contains("no such storage engine"),
            "{text}"
        );
    }

    #[test]
    fn unread_bytes_sum_the_receive_queues_of_established_connections_to_the_port() {
        // Port 0x4A5C = 19036: two established connections (0x200 and 0x1000 unread), its
        // listener (state 0A) and a connection from it to another port (local port 0x9C40).
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4A5C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:4A5C 0100007F:9C40 01 00000000:00000200 00:00000000 00000000     0        0 2 1
   2: 0100007F:4A5C 0100007F:9C41 01 00000010:00001000 00:00000000 00000000     0        0 3 1
   3: 0100007F:9C40 0100007F:4A5C 01 00000000:00000777 00:00000000 00000000     0        0 4 1";
        assert_eq!(unread_in(table, 0x4A5C), 0x1200);
        assert_eq!(unread_in(table, 0x9C40), 0x777);
        assert_eq!(unread_in(table, 1), 0);
        assert_eq!(unread_in("", 0x4A5C), 0);
    }

    #[test]
    fn unread_bytes_see_what_a_connection_to_a_listener_has_not_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 3000]).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while unread_bytes(port) != Some(3000) {
            assert!(Instant::now() < deadline, "unread {:?}", unread_bytes(port));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

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
