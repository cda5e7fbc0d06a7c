//! A TCP proxy in front of Postgres that records, for every transaction that claims
//! message ids (`INSERT INTO processed_messages`: the commit path's transactions), how
//! many round trips it took. A round trip is one exchange the client ends with `Sync`
//! or a simple `Query`; an exchange that executes nothing only prepares a statement,
//! which a connection does once per statement, so those are counted apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Protocol codes of the untyped requests that precede the startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
/// What marks a transaction of the commit path.
const CLAIM: &str = "INSERT INTO processed_messages";

/// One committed transaction of the commit path.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitTransaction {
    /// Exchanges that executed something, `BEGIN` and `COMMIT` included.
    pub round_trips: u32,
    /// Exchanges that only prepared a statement.
    pub prepares: u32,
}

#[derive(Default)]
struct Recorded {
    transactions: Vec<CommitTransaction>,
    /// `connection:text` of every statement the commit transactions prepared: a text
    /// prepared twice on one connection means its statement was not reused.
    prepared: Vec<String>,
}

/// A transaction under way.
#[derive(Default)]
struct Open {
    counts: CommitTransaction,
    /// Whether it claims message ids.
    claims: bool,
    prepared: Vec<String>,
}

pub struct RoundTripCounter {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
}

impl RoundTripCounter {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let shared = recorded.clone();
        tokio::spawn(async move {
            let mut connection = 0_u64;
            while let Ok((client, _)) = listener.accept().await {
                connection += 1;
                tokio::spawn(proxy(client, upstream, shared.clone(), connection));
            }
        });
        Self { addr, recorded }
    }

    /// The commit transactions so far.
    pub fn commit_transactions(&self) -> Vec<CommitTransaction> {
        self.recorded.lock().expect("recorded").transactions.clone()
    }

    /// (statements prepared, distinct statement texts prepared per connection).
    pub fn preparations(&self) -> (usize, usize) {
        let recorded = self.recorded.lock().expect("recorded");
        let mut distinct = recorded.prepared.clone();
        distinct.sort();
        distinct.dedup();
        (recorded.prepared.len(), distinct.len())
    }
}

async fn proxy(client: TcpStream, upstream: SocketAddr, recorded: Arc<Mutex<Recorded>>, id: u64) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut session = Session::new(recorded, id);
        let _ = session.forward(&mut client_read, &mut server_write).await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::join!(upstream, downstream);
}

/// What one client connection is doing.
struct Session {
    recorded: Arc<Mutex<Recorded>>,
    connection: u64,
    /// Prepared statements' texts by name.
    statements: HashMap<String, String>,
    transaction: Option<Open>,
    /// The exchange being sent: whether it executes something, what it prepares.
    executes: bool,
    preparing: Vec<String>,
}

impl Session {
    fn new(recorded: Arc<Mutex<Recorded>>, connection: u64) -> Self {
        Self {
            recorded,
            connection,
            statements: HashMap::new(),
            transaction: None,
            executes: false,
            preparing: Vec::new(),
        }
    }

    /// Copies client messages to the server, looking at each. A connection that asks
    /// for TLS is copied unread (the worker's pools are plain on loopback).
    async fn forward(
        &mut self,
        client: &mut OwnedReadHalf,
        server: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
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
            self.look_at(kind, &message[5..]);
            server.write_all(&message).await?;
        }
    }

    fn look_at(&mut self, kind: u8, body: &[u8]) {
        let mut strings = body.split(|&b| b == 0).map(String::from_utf8_lossy);
        match kind {
            b'Q' => {
                let text = strings.next().unwrap_or_default().into_owned();
                self.simple_query(&text);
            }
            b'P' => {
                let name = strings.next().unwrap_or_default().into_owned();
                let text = strings.next().unwrap_or_default().into_owned();
                self.preparing.push(text.clone());
                self.statements.insert(name, text);
            }
            b'B' => {
                let _portal = strings.next();
                let name = strings.next().unwrap_or_default();
                let claims = self
                    .statements
                    .get(name.as_ref())
                    .is_some_and(|t| t.contains(CLAIM));
                if let Some(open) = &mut self.transaction {
                    open.claims |= claims;
                }
            }
            b'E' => self.executes = true,
            b'S' => self.end_exchange(),
            _ => {}
        }
    }

    fn simple_query(&mut self, text: &str) {
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match word.as_str() {
            "BEGIN" => {
                let mut open = Open::default();
                open.counts.round_trips = 1;
                self.transaction = Some(open);
            }
            "COMMIT" | "END" => {
                if let Some(mut open) = self.transaction.take()
                    && open.claims
                {
                    open.counts.round_trips += 1;
                    let mut recorded = self.recorded.lock().expect("recorded");
                    recorded.transactions.push(open.counts);
                    let connection = self.connection;
                    recorded.prepared.extend(
                        open.prepared
                            .iter()
                            .map(|text| format!("{connection}:{text}")),
                    );
                }
            }
            "ROLLBACK" => self.transaction = None,
            _ => {
                if let Some(open) = &mut self.transaction {
                    open.counts.round_trips += 1;
                    open.claims |= text.contains(CLAIM);
                }
            }
        }
    }

    /// A `Sync`: the exchange goes to the server and its answer comes back.
    fn end_exchange(&mut self) {
        let preparing = std::mem::take(&mut self.preparing);
        if let Some(open) = &mut self.transaction {
            if self.executes {
                open.counts.round_trips += 1;
            } else {
                open.counts.prepares += 1;
                open.prepared.extend(preparing);
            }
        }
        self.executes = false;
    }
}
