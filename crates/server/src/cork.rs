//! Answers written together: on an HTTP thread, a connection's answer is
//! held until every connection that was ready with it has had its turn,
//! then all of them are written back to back (what Redis does before its
//! event loop sleeps).
//!
//! Why: writing an answer wakes the client if it sleeps, and in a virtual
//! machine waking a sleeping thread on another CPU costs more than the
//! door's own work. Written one at a time, between two requests' work,
//! every answer wakes the client again; written together, the first wakes
//! it and it finds the others already there. At low load nothing waits (a
//! lone answer is written as soon as its thread has nothing else ready);
//! under load an answer waits for at most the work of the other requests
//! that were ready in the same turn of the event loop.
//!
//! How: [`Corked`] wraps a connection. Its first write of an answer
//! returns `Pending` and puts the connection in its thread's queue; a
//! per-thread task ([`flusher`]), woken by that first entry, runs after the
//! connections already scheduled (the single-threaded scheduler runs tasks
//! in the order they were woken), opens every queued connection and wakes
//! it, and each then writes as usual. The gate closes again when the answer
//! is flushed. Reads are untouched. Only a thread that runs a [`flusher`]
//! holds writes back; elsewhere (no flusher) `Corked` writes through.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes must wait for the flusher.
const CLOSED: u8 = 0;
/// Waiting in the thread's queue.
const QUEUED: u8 = 1;
/// Writes go through until the answer is flushed.
const OPEN: u8 = 2;

/// One connection's gate, shared with its thread's queue.
#[derive(Debug, Default)]
struct Gate {
    state: AtomicU8,
    writer: Mutex<Option<Waker>>,
}

impl Gate {
    fn open_and_wake(&self) {
        self.state.store(OPEN, Ordering::Release);
        let waker = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The connections of this thread waiting to write, and the flusher that
/// opens them.
#[derive(Default)]
struct Queue {
    waiting: Vec<Arc<Gate>>,
    flusher: Option<Waker>,
    /// Whether the flusher has been woken and not run yet.
    scheduled: bool,
}

thread_local! {
    static QUEUE: RefCell<Option<Queue>> = const { RefCell::new(None) };
}

/// Runs for as long as its thread serves: each time it is polled it opens
/// and wakes every connection queued since. Spawn it once on each HTTP
/// thread's single-threaded runtime; connections on a thread without it
/// write through.
pub fn flusher() -> impl Future<Output = ()> {
    std::future::poll_fn(|cx| {
        let waiting = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let q = q.get_or_insert_with(Queue::default);
            q.flusher = Some(cx.waker().clone());
            q.scheduled = false;
            std::mem::take(&mut q.waiting)
        });
        for gate in waiting {
            gate.open_and_wake();
        }
        Poll::Pending
    })
}

/// Puts `gate` in this thread's queue; `false` when the thread has no
/// flusher (then the caller writes through).
fn enqueue(gate: &Arc<Gate>) -> bool {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        let Some(q) = q.as_mut() else {
            return false;
        };
        let Some(flusher) = q.flusher.as_ref() else {
            return false;
        };
        q.waiting.push(Arc::clone(gate));
        if !q.scheduled {
            q.scheduled = true;
            flusher.wake_by_ref();
        }
        true
    })
}

/// A TCP connection whose answers are written together with those of the
/// other connections ready at the same time (see the module docs).
#[derive(Debug)]
pub struct Corked {
    stream: TcpStream,
    gate: Arc<Gate>,
}

impl Corked {
    /// Wraps `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            gate: Arc::new(Gate::default()),
        }
    }

    /// `Ready` when a write may go through now; otherwise queued (once per
    /// answer) with the task's waker, to be woken by the flusher.
    fn poll_gate(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.gate.state.load(Ordering::Acquire) {
            OPEN => Poll::Ready(()),
            state => {
                *self
                    .gate
                    .writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
                if state == CLOSED {
                    if !enqueue(&self.gate) {
                        self.gate.state.store(OPEN, Ordering::Release);
                        return Poll::Ready(());
                    }
                    self.gate.state.store(QUEUED, Ordering::Release);
                }
                // The flusher may have opened it between the load and now.
                if self.gate.state.load(Ordering::Acquire) == OPEN {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for Corked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Corked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_gate(cx));
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_gate(cx));
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx));
        // The answer is out: the next one waits its turn again.
        if self.gate.state.load(Ordering::Acquire) == OPEN {
            self.gate.state.store(CLOSED, Ordering::Release);
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.gate.state.store(OPEN, Ordering::Release);
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn pair() -> (Corked, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), l.accept());
        (Corked::new(server.unwrap().0), client.unwrap())
    }

    /// Without a flusher on the thread, writes go straight through.
    #[tokio::test(flavor = "current_thread")]
    async fn without_a_flusher_writes_go_through() {
        let (mut corked, mut client) = pair().await;
        corked.write_all(b"hello").await.unwrap();
        corked.flush().await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    /// With a flusher, answers of connections ready together wait for each
    /// other and then all arrive; each connection's next answer waits
    /// again, and nothing is lost or reordered.
    #[tokio::test(flavor = "current_thread")]
    async fn answers_ready_together_are_written_together_and_all_arrive() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(flusher());
                let mut clients = Vec::new();
                let order = std::rc::Rc::new(RefCell::new(Vec::new()));
                let mut corked_ends = Vec::new();
                for _ in 0..4u8 {
                    let (corked, client) = pair().await;
                    corked_ends.push(corked);
                    clients.push(client);
                }
                // All connections start at once, as after one poll of the
                // event loop.
                let mut tasks = Vec::new();
                for (i, mut corked) in (0..4u8).zip(corked_ends) {
                    let order = std::rc::Rc::clone(&order);
                    tasks.push(tokio::task::spawn_local(async move {
                        for round in 0..3u8 {
                            corked.write_all(&[i, round]).await.unwrap();
                            corked.flush().await.unwrap();
                            order.borrow_mut().push((i, round));
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                // Round by round: no connection wrote its second answer
                // before every connection had written its first.
                let order = order.borrow().clone();
                let rounds: Vec<u8> = order.iter().map(|(_, r)| *r).collect();
                let mut sorted = rounds.clone();
                sorted.sort_unstable();
                assert_eq!(rounds, sorted, "{order:?}");
                for (i, client) in clients.iter_mut().enumerate() {
                    let mut buf = [0u8; 6];
                    client.read_exact(&mut buf).await.unwrap();
                    let i = u8::try_from(i).unwrap();
                    assert_eq!(buf, [i, 0, i, 1, i, 2]);
                }
            })
            .await;
    }
}
