//! Settles deliveries of one channel: acks a contiguous run of finished deliveries with
//! one `multiple` ack, acks stragglers above a gap one by one (so a slow message never
//! holds the prefetch window of the fast ones), and hands back requeues.

use crate::supervisor::Supervisor;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use tokio::sync::mpsc;

/// How a delivery ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Durably handled (committed, scheduled for retry, or dead-lettered).
    Ack,
    /// Not handled: give it back to the queue.
    Requeue,
    /// Neither: the channel that would settle it is gone, and the broker gives the
    /// message out again by itself (the session ends, see `consumer`).
    Abandon,
}

/// Sends settlements to the channel's acker task. Delivery tags belong to one channel:
/// a handle is never used with another channel.
#[derive(Clone)]
pub struct AckHandle {
    sender: mpsc::UnboundedSender<(u64, Settle)>,
}

impl AckHandle {
    pub fn settle(&self, delivery_tag: u64, settle: Settle) {
        // A closed acker means the channel is gone; the broker requeues by itself.
        let _ = self.sender.send((delivery_tag, settle));
    }
}

/// Starts the acker for `channel` under `supervisor`; it ends when every handle is
/// dropped (after sending what it was given) or when the channel fails.
pub fn spawn(
    channel: Channel,
    supervisor: &Supervisor,
) -> (AckHandle, tokio::task::JoinHandle<Option<()>>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let task = supervisor.spawn("acker", run(channel, receiver));
    (AckHandle { sender }, task)
}

async fn run(channel: Channel, mut receiver: mpsc::UnboundedReceiver<(u64, Settle)>) {
    let mut window = Window::default();
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, 1024).await > 0 {
        let mut requeues = Vec::new();
        for (tag, settle) in batch.drain(..) {
            match settle {
                Settle::Ack => window.finished(tag),
                Settle::Requeue => requeues.push(tag),
                Settle::Abandon => {}
            }
        }
        for tag in requeues {
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if channel.basic_nack(tag, options).await.is_err() {
                return;
            }
            window.settled_elsewhere(tag);
        }
        for (tag, multiple) in window.take_acks() {
            if channel
                .basic_ack(tag, BasicAckOptions { multiple })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Which delivery tags are settled; tags start at 1 on a new channel.
#[derive(Debug, Default)]
pub struct Window {
    /// Every tag below this is settled.
    low: u64,
    /// Finished but not yet acked.
    finished: BTreeSet<u64>,
    /// Settled above `low` (acked singly or requeued).
    settled: BTreeSet<u64>,
}

impl Window {
    pub fn finished(&mut self, tag: u64) {
        self.finished.insert(tag);
    }

    pub fn settled_elsewhere(&mut self, tag: u64) {
        self.settled.insert(tag);
    }

    /// The acks to send now: one `multiple` ack over the contiguous run from the low
    /// water mark, then single acks for finished tags above the first gap.
    pub fn take_acks(&mut self) -> Vec<(u64, bool)> {
        if self.low == 0 {
            self.low = 1;
        }
        let mut acks = Vec::new();
        let mut run_end = None;
        loop {
            if self.finished.remove(&self.low) {
                run_end = Some(self.low);
            } else if !self.settled.remove(&self.low) {
                break;
            }
            self.low += 1;
        }
        if let Some(tag) = run_end {
            acks.push((tag, true));
        }
        for tag in std::mem::take(&mut self.finished) {
            acks.push((tag, false));
            self.settled.insert(tag);
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_contiguous_run_is_one_multiple_ack() {
        let mut w = Window::default();
        for tag in [2, 1, 3] {
            w.finished(tag);
        }
        assert_eq!(w.take_acks(), vec![(3, true)]);
    }

    #[test]
    fn tags_above_a_gap_are_acked_singly_and_never_covered_twice() {
        let mut w = Window::default();
        w.finished(1);
        w.finished(3);
        assert_eq!(w.take_acks(), vec![(1, true), (3, false)]);
        w.finished(2);
        w.finished(4);
        // 2 closes the gap; 3 is already settled, so the run ends at 4 but 3 is skipped
        assert_eq!(w.take_acks(), vec![(4, true)]);
    }

    #[test]
    fn a_requeued_tag_does_not_block_the_run() {
        let mut w = Window::default();
        w.settled_elsewhere(1);
        w.finished(2);
        assert_eq!(w.take_acks(), vec![(2, true)]);
    }
}
