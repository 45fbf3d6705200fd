//! The signals that stop reaper. Listening starts when a [`StopSignals`] is created, so that no
//! signal can arrive while nobody listens; the second signal ends the process from inside the
//! signal handler (signal-hook), whatever the runtime's threads are doing.

use std::sync::Arc;

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() -> std::io::Result<()> {
    StopSignals::new(false)?.recv().await;
    Ok(())
}

/// The signals that stop reaper (SIGINT, SIGTERM, and for a foreground purge SIGHUP), listened
/// to from creation on. The first one is for the caller to act on; the second one ends the
/// process with status 130 from inside the signal handler (the batch in flight rolls back in
/// the database), so it works whatever the runtime's threads are busy with.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignals")
            .field("hangup", &self.hangup.is_some())
            .finish()
    }
}

impl StopSignals {
    pub(crate) fn new(with_hangup: bool) -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        use tokio::signal::unix::{SignalKind, signal};
        // The exit is registered before the flag that arms it, so the first signal only arms it.
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping: &[i32] = if with_hangup {
            &[SIGINT, SIGTERM, SIGHUP]
        } else {
            &[SIGINT, SIGTERM]
        };
        for &number in stopping {
            signal_hook::flag::register_conditional_shutdown(number, 130, armed.clone())?;
            signal_hook::flag::register(number, armed.clone())?;
        }
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: if with_hangup {
                Some(signal(SignalKind::hangup())?)
            } else {
                None
            },
        })
    }

    /// The next stop signal.
    pub(crate) async fn recv(&mut self) {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = hangup => {}
        }
    }
}
