//! The start-up self-test. Offsets read from a BTF that does not describe the
//! running kernel make the sensor blind without any error: before it says
//! `ready`, the sensor runs a canary exec of its own ([`canary`], its machine
//! code in [`elf`]) and checks that the kernel record carries what it really
//! is, field by field.

mod canary;
mod elf;

use std::{path::Path, time::Duration};

use anyhow::{Result, bail};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use log::{info, warn};
use tokio::io::unix::AsyncFd;

use super::pipeline::Pipeline;
use crate::{exec::decode, kernel::loader};
use canary::Canary;

/// How long the canary's record may take to arrive (an exec takes milliseconds,
/// even in an emulated VM).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Canary runs before the self-test gives up, when records were lost meanwhile.
const ATTEMPTS: u32 = 3;

/// Runs the canary exec and checks the kernel's record of it; other execs
/// seen meanwhile go through the pipeline as usual. The canary's own record
/// never reaches an output. On a busy host the ring buffer may be full when
/// the canary runs: its record is then lost (and counted), and it runs again.
pub async fn run(
    events: &mut AsyncFd<RingBuf<MapData>>,
    lost: &PerCpuArray<MapData, u64>,
    pipeline: &mut Pipeline,
    btf: &Path,
) -> Result<()> {
    for attempt in 1..=ATTEMPTS {
        let lost_before = loader::lost_total(lost)?;
        let canary = Canary::start()?;
        let what = canary.describe();
        if let Some(exec) = canary_record(events, pipeline, canary.pid()).await {
            let verified = canary.verify(&exec, btf);
            canary.finish()?;
            verified?;
            info!("self-test passed: the kernel program read the canary exec {what} right");
            return Ok(());
        }
        canary.finish()?;
        let lost = loader::lost_total(lost)? - lost_before;
        if lost > 0 && attempt < ATTEMPTS {
            warn!(
                "self-test: {lost} records were lost (the ring buffer was full) while the \
                 canary exec {what} ran; running it again"
            );
            continue;
        }
        bail!(
            "self-test failed: no kernel record of the canary exec {what} arrived within \
             {TIMEOUT:?} ({lost} records lost meanwhile): the kernel program does not \
             report execs on this kernel"
        );
    }
    unreachable!("the last attempt returns")
}

/// Reads the ring until the record of the exec by `pid` arrives (None after
/// `TIMEOUT`), handing every other record to the pipeline.
async fn canary_record(
    events: &mut AsyncFd<RingBuf<MapData>>,
    pipeline: &mut Pipeline,
    pid: u32,
) -> Option<decode::Exec> {
    let deadline = tokio::time::sleep(TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.ok()?;
                let ring = guard.get_inner_mut();
                let mut found = None;
                while let Some(item) = ring.next() {
                    match decode::decode(&item) {
                        Ok(exec) if found.is_none() && exec.self_test_tgid == Some(pid) => {
                            found = Some(exec);
                        }
                        _ => {
                            pipeline.handle(&item);
                        }
                    }
                }
                guard.clear_ready();
                pipeline.flush();
                if found.is_some() {
                    return found;
                }
            }
            () = &mut deadline => return None,
        }
    }
}
