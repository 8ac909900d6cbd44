//! Kernel losses under a flood while stdout is not read: every loss still
//! reaches the output (loss records have reserved room in every queue), so
//! `sum(tinyexec.lost_since_previous)` equals the heartbeat's `kernel_lost`.
//! A test binary of its own: its exec flood runs on the whole machine, and
//! no latency test may run beside it.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::Value;
use tinyexec_harness::{
    TempDir, field, field_u64, is_heartbeat, output_counts, process::Proc, ready_timeout,
    run_or_killed, sensor_path, tiny_exit0, unique,
};

#[test]
fn a_stdout_nobody_reads_for_a_while_still_gets_every_kernel_loss() {
    let dir = TempDir::new("lost");
    let quiet = dir.exe(&unique("quiet"), &tiny_exit0());
    // The smallest ring, so the kernel loses records; a queue of 16 (a
    // reserve of 4), so it overflows; stdout on a pipe of our own, which the
    // harness's reader would read at once.
    let mut p = Proc::spawn(
        "the sensor",
        Command::new(sensor_path())
            .args([
                "run",
                "--no-exclusions",
                "--all-execs",
                "--output-queue",
                "16",
            ])
            .args(["--ring-buffer-size", "4096", "--heartbeat-interval", "1"])
            .stdout(Stdio::piped()),
    )
    .expect("starting the sensor");
    let out = p.take_stdout().expect("the sensor's stdout");
    p.wait_ready(ready_timeout()).expect("the sensor ready");
    // Execs a few hundred a second: the ring, read every 200 ms, overflows
    // (a gentle flood).
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                run_or_killed(&mut Command::new(&quiet));
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Nobody reads: the pipe fills, then the queue and its reserve, while
    // loss records come every 200 ms.
    thread::sleep(Duration::from_secs(6));
    let reader = thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map(|l| {
                let l = l.expect("reading the sensor's stdout");
                serde_json::from_str::<Value>(&l)
                    .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {l}"))
            })
            .collect::<Vec<Value>>()
    });
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("the flood thread");
    assert!(
        p.stop(libc::SIGTERM, Duration::from_secs(30))
            .expect("the sensor stopped")
            .success(),
        "{}",
        p.stderr_tail()
    );
    let recs = reader.join().expect("the reader");
    let last = recs
        .iter()
        .rfind(|r| is_heartbeat(r))
        .expect("a heartbeat at exit");
    assert_eq!(field(last, "heartbeat.final"), true, "{last}");
    let kernel_lost = field_u64(last, "heartbeat.kernel_lost");
    let c = output_counts(last, "stdout");
    assert!(kernel_lost > 0, "the kernel lost nothing: {last}");
    assert!(c.dropped > 0, "stdout's queue never overflowed: {c:?}");
    let lost: Vec<&Value> = recs
        .iter()
        .filter(|r| field(r, "event.action") == "lost")
        .collect();
    let in_lost: u64 = lost
        .iter()
        .map(|r| field_u64(r, "tinyexec.lost_since_previous"))
        .sum();
    let in_all: u64 = recs
        .iter()
        .map(|r| field_u64(r, "tinyexec.lost_since_previous"))
        .sum();
    eprintln!(
        "kernel_lost {kernel_lost}, {} loss records, stdout {c:?}",
        lost.len()
    );
    assert_eq!(
        (in_lost, in_all),
        (kernel_lost, kernel_lost),
        "sum(lost_since_previous) over the loss records, over all records"
    );
    let counted: u64 = lost.iter().map(|r| field_u64(r, "lost.count")).sum();
    assert_eq!(
        counted, kernel_lost,
        "the lost.count values add up to the total"
    );
}
