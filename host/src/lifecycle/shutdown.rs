//! Graceful shutdown: one small object, cloned wherever a task must stop.
//! Triggered by SIGTERM or SIGINT (or by hand, in tests); every task waits on
//! [`Shutdown::wait`] and finishes its current work.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        Shutdown { tx }
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the shutdown started.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone: shut down as well.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Triggers the shutdown on SIGTERM or SIGINT.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            this.trigger();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_trigger() {
        let s = Shutdown::new();
        let waiter = tokio::spawn(s.wait());
        assert!(!s.is_triggered());
        s.trigger();
        waiter.await.expect("waiter");
        assert!(s.is_triggered());
        // A late waiter resolves at once.
        s.wait().await;
    }
}
