//! Dead-letter queue operations (list, show, replay, purge).
