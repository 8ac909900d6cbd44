//! A stand-in for Entra ID and the Logs Ingestion API (`sentinel_server.py`),
//! with its own private CA, for the tests and the bench.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::unique;

pub const TENANT: &str = "tenant-1";
pub const CLIENT: &str = "client-1";
pub const SECRET: &str = "s3cret &=/ value";
pub const DCR: &str = "dcr-00000000000000000000000000000001";
pub const STREAM: &str = "Custom-TinyexecAlerts";

#[derive(Debug)]
pub struct Ingest {
    child: Child,
    /// The app's certificate and key, PEM, for certificate credentials.
    pub client_pem: PathBuf,
    pub port: u16,
    log: PathBuf,
    /// The CA the client is told to trust.
    cert: PathBuf,
    mode_file: PathBuf,
}

impl Ingest {
    pub fn start(dir: &Path) -> Self {
        // A private CA and a server certificate it signs (webpki refuses a CA as the end entity).
        let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let (cert, key, csr, ext) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("server.csr"),
            dir.join("server.ext"),
        );
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("writing server.ext");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        // A self-signed certificate and its (PKCS#8) key.
        let self_signed = |subject: &'static str, key: &Path, cert: &Path| {
            openssl(&[
                os("req"),
                os("-x509"),
                os("-newkey"),
                os("rsa:2048"),
                os("-nodes"),
                os("-days"),
                os("1"),
                os("-subj"),
                os(subject),
                os("-keyout"),
                key.as_os_str(),
                os("-out"),
                cert.as_os_str(),
            ]);
        };
        self_signed("/CN=tinyexec-test-ca", &ca_key, &ca);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("1"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        // The app's registered certificate: cert and PKCS#8 key in one PEM file.
        let (client_cert, client_key) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
        self_signed("/CN=tinyexec-sensor", &client_key, &client_cert);
        let client_pem = dir.join("client.pem");
        write_private(
            &client_pem,
            &[
                fs::read(&client_cert).expect("reading the client certificate"),
                fs::read(&client_key).expect("reading the client key"),
            ]
            .concat(),
        );
        let (log, port_file) = (dir.join("ingest.log"), dir.join("port"));
        let mode_file = dir.join("mode");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sentinel_server.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--log")
            .arg(&log)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--mode-file")
            .arg(&mode_file)
            .args([
                "--tenant",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret",
                SECRET,
            ])
            .args(["--dcr", DCR, "--stream", STREAM])
            .arg("--client-cert")
            .arg(&client_cert)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = fs::read_to_string(&port_file) {
                break p.trim().parse().expect("port");
            }
            assert!(
                Instant::now() < deadline,
                "ingestion stand-in did not start"
            );
            thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            client_pem,
            port,
            log,
            cert: ca,
            mode_file,
        }
    }

    /// ok | refuse | timeout | hang | max:N | token-bytes:N, from the next request on.
    ///
    /// Written aside and renamed into place: the stand-in reads the file at
    /// each request, and a write in place (truncate, then write) would let a
    /// request in between read it empty, which the stand-in takes for "ok".
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn mode(&self, mode: &str) {
        let tmp = self.mode_file.with_extension("tmp");
        fs::write(&tmp, mode).expect("mode file");
        fs::rename(&tmp, &self.mode_file).expect("mode file into place");
    }

    /// The stand-in's log entries written so far: whole lines only (the
    /// stand-in may be writing the next one as the log is read).
    pub fn entries(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }

    /// How many delivered records have `file.path` equal to `path`, counted in
    /// the log's text (the bench asks this often: parsing every record each
    /// time would cost it gigabytes, and its forks with them).
    pub fn delivered_with_path(&self, path: &str) -> usize {
        let needle = format!("\"path\": {}", serde_json::Value::from(path));
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"kind\": \"ingest\""))
            .map(|l| l.matches(&needle).count())
            .sum()
    }

    /// Records delivered so far, in delivery order.
    pub fn delivered(&self) -> Vec<Value> {
        self.entries()
            .into_iter()
            .filter(|e| e["kind"] == "ingest")
            .flat_map(|e| e["records"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn wait_delivered(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.delivered();
            if pred(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "not delivered: {what}; the stand-in logged:\n{:#?}",
                self.entries()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Settings with the secret in a file; `credential` replaces that line when given.
    pub fn settings(&self, dir: &Path, spool: &Path, extra: &str) -> PathBuf {
        let secret = dir.join("secret");
        write_private(&secret, format!("{SECRET}\n").as_bytes());
        let cred = format!(
            "client_secret_file = {:?}",
            secret.to_str().expect("a UTF-8 secret path")
        );
        self.settings_with(dir, spool, &cred, extra)
    }

    pub fn settings_with(
        &self,
        dir: &Path,
        spool: &Path,
        credential: &str,
        extra: &str,
    ) -> PathBuf {
        let path = dir.join(unique("sentinel") + ".toml");
        let mut f = fs::File::create(&path).expect("creating the Sentinel configuration");
        let delay = if extra.contains("batch_max_delay_ms") {
            ""
        } else {
            "batch_max_delay_ms = 200\n"
        };
        writeln!(
            f,
            "endpoint = \"https://127.0.0.1:{port}\"\nauthority = \"https://127.0.0.1:{port}/\"\n\
             dcr_immutable_id = \"{DCR}\"\nstream = \"{STREAM}\"\ntenant_id = \"{TENANT}\"\n\
             client_id = \"{CLIENT}\"\n{credential}\nca_file = {cert:?}\n\
             spool_dir = {spool:?}\n{delay}timeout_secs = 2\n{extra}",
            port = self.port,
            cert = self.cert.to_str().expect("a UTF-8 certificate path"),
            spool = spool.to_str().expect("a UTF-8 spool path"),
        )
        .expect("writing the Sentinel configuration");
        path
    }
}

/// Writes a credential file as the sensor requires it: mode 0600, whatever
/// the umask or a previous mode.
///
/// # Panics
///
/// When the file cannot be written.
pub fn write_private(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
