//! A TCP proxy in front of Postgres that counts round trips: every `Sync` and simple
//! `Query` message a client sends ends one exchange with the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Protocol codes of the untyped requests that precede the startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

pub struct RoundTripCounter {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
}

impl RoundTripCounter {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async {
                        let _ =
                            forward_counting(&mut client_read, &mut server_write, &counted).await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Self { addr, count }
    }

    /// Round trips so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// Copies client messages to the server, counting `Sync` ('S') and `Query` ('Q'). A
/// connection that asks for TLS is copied uncounted (only the worker's pools, plain on
/// loopback, matter here; sqlx's database-exists check asks for TLS).
async fn forward_counting(
    client: &mut tokio::net::tcp::OwnedReadHalf,
    server: &mut tokio::net::tcp::OwnedWriteHalf,
    count: &AtomicU64,
) -> std::io::Result<()> {
    // Untyped: the startup message, or a request for encryption.
    let length = client.read_u32().await?;
    let mut message = length.to_be_bytes().to_vec();
    message.resize(length as usize, 0);
    client.read_exact(&mut message[4..]).await?;
    server.write_all(&message).await?;
    let code = u32::from_be_bytes(message[4..8].try_into().expect("4 bytes"));
    if code == SSL_REQUEST || code == GSSENC_REQUEST {
        tokio::io::copy(client, server).await?;
        return Ok(());
    }
    loop {
        let kind = client.read_u8().await?;
        let length = client.read_u32().await?;
        let mut message = vec![kind];
        message.extend_from_slice(&length.to_be_bytes());
        message.resize(1 + length as usize, 0);
        client.read_exact(&mut message[5..]).await?;
        if kind == b'S' || kind == b'Q' {
            count.fetch_add(1, Ordering::SeqCst);
        }
        server.write_all(&message).await?;
    }
}
