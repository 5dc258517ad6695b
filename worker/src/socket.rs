//! TCP connections for the gRPC client whose writes never raise SIGPIPE.
//!
//! CLI commands restore SIGPIPE's default action (so that `atelier jobs | head`
//! ends quietly), which kills the process on a write to a socket the peer closed.
//! Plain writes on a `TcpStream` are sent with `MSG_NOSIGNAL`, but vectored writes
//! (`writev`, which hyper and rustls use) are not: a coordinator that hangs up (a
//! TLS port answering a plain-text client, a replica killed mid-call) would end the
//! command with signal 13 instead of an error. These connections write one buffer
//! at a time, so a closed socket is an `EPIPE` error like any other.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

/// hyper's HTTP connector (TCP_NODELAY on), yielding [`NoSigpipe`] connections.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
}

impl Connector {
    pub(crate) fn new() -> Connector {
        let mut http = HttpConnector::new();
        // `https://` is tonic's to wrap in TLS; this connector only makes the TCP part.
        http.enforce_http(false);
        http.set_nodelay(true);
        Connector { http }
    }
}

impl Service<Uri> for Connector {
    type Response = NoSigpipe;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<NoSigpipe, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move { Ok(NoSigpipe(connecting.await?)) })
    }
}

/// A TCP connection that turns vectored writes into plain ones.
pub(crate) struct NoSigpipe(TokioIo<TcpStream>);

impl Read for NoSigpipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for NoSigpipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
