//! The signals that stop reaper. Listening starts when a [`StopSignals`] is created, so that no
//! signal can arrive while nobody listens; creating one needs no runtime, so the daemon does it
//! first thing in `main`, before the runtime, the logging and the configuration. The second
//! signal ends the process from inside the signal handler (signal-hook), whatever the runtime's
//! threads are doing.

use std::os::unix::net::UnixStream;
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
#[derive(Debug)]
pub(crate) struct StopSignals {
    /// The read end of a socket pair the signal handler writes a byte to (the self-pipe
    /// pattern): a signal that arrives before anyone awaits [`StopSignals::recv`], even before
    /// the runtime exists, waits there.
    wake: UnixStream,
}

impl StopSignals {
    /// Starts listening. Needs no runtime.
    pub(crate) fn new(with_hangup: bool) -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        // The exit is registered before the flag that arms it, so the first signal only arms it.
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping: &[i32] = if with_hangup {
            &[SIGINT, SIGTERM, SIGHUP]
        } else {
            &[SIGINT, SIGTERM]
        };
        let (wake, signalled) = UnixStream::pair()?;
        for &number in stopping {
            signal_hook::flag::register_conditional_shutdown(number, 130, armed.clone())?;
            signal_hook::flag::register(number, armed.clone())?;
            signal_hook::low_level::pipe::register(number, signalled.try_clone()?)?;
        }
        Ok(Self { wake })
    }

    /// The next stop signal (or one that arrived since creation). If the runtime cannot watch
    /// the socket (it always can inside a tokio runtime with I/O enabled), the error is logged
    /// and this waits forever: the second signal still ends the process.
    pub(crate) async fn recv(&mut self) {
        if let Err(error) = self.wait().await {
            tracing::error!(
                message = "Cannot wait for stop signals; a second signal still exits (status 130).",
                %error
            );
            std::future::pending::<()>().await;
        }
    }

    async fn wait(&mut self) -> std::io::Result<()> {
        self.wake.set_nonblocking(true)?;
        let watched = tokio::net::UnixStream::from_std(self.wake.try_clone()?)?;
        let mut byte = [0_u8; 1];
        loop {
            watched.readable().await?;
            match watched.try_read(&mut byte) {
                Ok(_) => return Ok(()),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(error),
            }
        }
    }
}
