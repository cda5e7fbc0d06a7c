//! A TCP proxy a test can cut: every connection through it dies and new ones are
//! refused until it is restored. It stands in for "the broker restarted" or "Postgres
//! stopped" for one worker, without disturbing the other tests sharing the services.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    /// Cancelled to kill every connection of the current generation.
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (down2, generation2, stop2) = (down.clone(), generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop2.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if down2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let kill = generation2.lock().await.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = kill.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            down,
            generation,
            stop,
        }
    }

    /// Kills every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        let mut generation = self.generation.lock().await;
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
