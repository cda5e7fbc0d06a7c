//! Moving a deployment onto the quorum topology (docs/operations.md, upgrading the queues).
