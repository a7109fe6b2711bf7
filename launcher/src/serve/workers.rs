//! The threads that serve connections: started ahead, so a caller does not wait for a thread to
//! be created (about 60 µs on these machines, on the path to its instance's first instruction).
//! Each serves one connection at a time, for as long as its instance runs; when every thread is
//! busy, the server starts another.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

/// Connections waiting for a thread, and how many threads wait for a connection.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    more: Condvar,
}

struct State<T> {
    jobs: VecDeque<T>,
    idle: usize,
    closed: bool,
}

impl<T> Queue<T> {
    pub fn new() -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
                closed: false,
            }),
            more: Condvar::new(),
        }
    }

    /// Queues `job`; true if no thread is free to take it (the caller starts one).
    pub fn push(&self, job: T) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.jobs.push_back(job);
        let short = s.jobs.len() > s.idle;
        drop(s);
        self.more.notify_one();
        short
    }

    /// The next job, or `None` once the queue is closed and empty (the thread ends).
    pub fn next(&self) -> Option<T> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = s.jobs.pop_front() {
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s.idle += 1;
            s = self.more.wait(s).unwrap_or_else(|e| e.into_inner());
            s.idle -= 1;
        }
    }

    /// No more jobs: threads end once the queued ones are done.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.more.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_taken_in_order_and_threads_end_when_closed() {
        let q = Queue::new();
        // No thread waits yet: each push asks for one.
        assert!(q.push(1));
        assert!(q.push(2));
        assert_eq!(q.next(), Some(1));
        assert_eq!(q.next(), Some(2));
        q.close();
        assert_eq!(q.next(), None);
    }

    #[test]
    fn a_waiting_thread_takes_the_next_job() {
        let q = std::sync::Arc::new(Queue::new());
        let taker = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || q.next())
        };
        // Pushed only once the thread waits: it is counted as free.
        while q.state.lock().unwrap().idle == 0 {
            std::thread::yield_now();
        }
        assert!(!q.push(7));
        assert_eq!(taker.join().unwrap(), Some(7));
    }
}
