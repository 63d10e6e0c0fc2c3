//! Running the HTTP listener until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::{LocalAddr, RemoteAddr};

/// Binds first, so start-up fails fast on a taken port and the log shows the real address.
pub async fn serve(
    addr: SocketAddr,
    endpoint: impl poem::Endpoint + 'static,
    what: &str,
) -> anyhow::Result<()> {
    let acceptor = TcpListener::bind(addr)
        .into_acceptor()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: cannot listen on {addr}: {e}"))?;
    let bound: Vec<String> = acceptor
        .local_addr()
        .iter()
        .map(|a| a.to_string())
        .collect();
    tracing::info!(listen = %bound.join(","), "{what} listening");
    poem::Server::new_with_acceptor(NoDelay(acceptor))
        .run_with_graceful_shutdown(endpoint, shutdown_signal(), Some(Duration::from_secs(10)))
        .await?;
    Ok(())
}

/// Sets `TCP_NODELAY` on every accepted connection. Responses go out as a header write and a
/// body write; with Nagle's algorithm on, the body of a small response waits for the client's
/// delayed ACK of the header (about 40 ms on Linux) on a kept-alive connection.
struct NoDelay(TcpAcceptor);

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        Ok((io, local, remote, scheme))
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
