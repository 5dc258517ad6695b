//! The gRPC connection to the coordinator, and which of its errors are worth a retry.

use std::time::Duration;

use atelier_proto::v1::atelier_client::AtelierClient;
use atelier_proto::v1::worker_api_client::WorkerApiClient;
use tonic::Code;

pub use crate::connect::ConnectOptions;
pub use crate::failover::Conn;

pub type Api = WorkerApiClient<Conn>;
pub type UserApi = AtelierClient<Conn>;

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A channel that connects on first use and reconnects after the coordinator went
/// away, so callers only ever see per-call errors; over an address list, each call
/// goes to a live replica. It sends the token, if any, with every call.
pub fn channel(options: &ConnectOptions) -> Result<Conn, String> {
    Conn::new(options.endpoints()?, options.authorization()?)
}

pub fn worker_api(channel: Conn) -> Api {
    WorkerApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn user_api(channel: Conn) -> UserApi {
    AtelierClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Errors that say the coordinator is away or busy, not that the request is wrong.
pub fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::ResourceExhausted
    )
}

/// Exponential backoff from 100 ms to 5 s, with jitter.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        let jitter = rand::random::<f64>() * 0.2 + 0.9;
        d.mul_f64(jitter)
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}
