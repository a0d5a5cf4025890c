//! [`Team`]: a fixed set of worker threads for the many small parallel steps of a forward pass.
//!
//! Decoding one token of a 135M-parameter model runs about 240 parallel steps (seven matmuls and one
//! attention per layer, and the logits), each a few microseconds of work per thread. A general
//! work-stealing pool spends a noticeable share of that waking workers, stealing and sleeping again
//! (on SmolLM2-135M q4_0 with 2 threads, rayon's scheduling showed up as ~15% of decode samples).
//! A team does less:
//!
//! - one job at a time, published by bumping an epoch in one atomic word that also holds the job's
//!   task count and the next unclaimed task; threads claim tasks with a compare-and-swap on it, so a
//!   claim is valid only for the job it was made for;
//! - the caller works too, and waits only for tasks that were actually claimed: a worker that was
//!   descheduled (a busy machine) costs nothing, the caller simply takes its tasks;
//! - waiting is bounded: workers spin for [`SPIN`] after their last task (the next step of a forward
//!   pass comes within microseconds), then park until the next job unparks them; the caller spins
//!   briefly for claimed tasks to finish, then yields its core to whichever thread holds them, instead
//!   of spinning without limit (which, on a loaded 2-core machine, can wait for a whole time slice).
//!
//! Publishing a job allocates nothing, so decoding stays allocation-free.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next job before it parks.
pub const SPIN: Duration = Duration::from_micros(100);
/// How long the caller spins for claimed tasks to finish before it starts yielding.
const CALLER_SPIN: Duration = Duration::from_micros(20);

/// Most tasks one job may have (the width of a field of the state word). Larger jobs run on the
/// calling thread alone.
pub const MAX_TASKS: usize = (1 << TASK_BITS) - 1;

// The state word: epoch (40 bits) | task count (12) | next unclaimed task (12). A 40-bit epoch wraps
// after 10^12 jobs; a stale claim would need one thread to stall between its load and its
// compare-and-swap for exactly that many jobs.
const TASK_BITS: u32 = 12;
const TASK_MASK: u64 = (1 << TASK_BITS) - 1;

fn pack(epoch: u64, tasks: usize, next: usize) -> u64 {
    (epoch << (2 * TASK_BITS)) | ((tasks as u64) << TASK_BITS) | next as u64
}

fn epoch_of(s: u64) -> u64 {
    s >> (2 * TASK_BITS)
}

fn tasks_of(s: u64) -> usize {
    ((s >> TASK_BITS) & TASK_MASK) as usize
}

fn next_of(s: u64) -> usize {
    (s & TASK_MASK) as usize
}

/// The job's body as the workers see it: a pointer to a `&dyn Fn(usize)` on the caller's stack.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    state: AtomicU64,
    /// Points at the current job's `Job` (valid while the job has unfinished claimed tasks).
    job: AtomicPtr<()>,
    /// Tasks of the current job finished (run, or skipped after a panic).
    done: AtomicUsize,
    panicked: AtomicBool,
    quit: AtomicBool,
    /// Per worker: parked (or about to park) and waiting to be unparked.
    sleeping: Vec<AtomicBool>,
}

impl Shared {
    /// Claims the next task of job `epoch`, if it has one left.
    fn claim(&self, epoch: u64) -> Option<usize> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if epoch_of(s) != epoch || next_of(s) >= tasks_of(s) {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next_of(s)),
                Err(now) => s = now,
            }
        }
    }

    /// Runs claimed task `i` of the current job, recording (not propagating) a panic, so that every
    /// claimed task is counted in `done` whatever happens (the caller waits for that count).
    fn run_task(&self, i: usize) {
        // SAFETY: a task of the current job was claimed, so the job is not finished: its caller is
        // still inside `Team::run` (it waits for `done` to count this task), which keeps the `Job`
        // that `job` points at alive (the caller's own tasks run inside `run` itself). The claim's compare-and-swap (Acquire) synchronises with the
        // state store (SeqCst) that published the job after `job` was written.
        let job: Job<'_> = unsafe { *(self.job.load(Ordering::Relaxed) as *const Job<'_>) };
        if catch_unwind(AssertUnwindSafe(|| job(i))).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// A calling thread plus `threads - 1` workers that run one job at a time. See the module docs.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    joins: Vec<JoinHandle<()>>,
    /// Held by the thread whose work the team is doing ([`Team::install`]).
    busy: AtomicBool,
}

thread_local! {
    /// The team installed on this thread, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

impl Team {
    /// A team of `threads` (the caller counts as one, so `threads - 1` workers are started).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut team = Team {
            shared,
            workers: Vec::with_capacity(workers),
            joins: Vec::with_capacity(workers),
            busy: AtomicBool::new(false),
        };
        for w in 0..workers {
            let shared = Arc::clone(&team.shared);
            let join = thread::Builder::new()
                .name(format!("edgeinfer-{}", w + 1))
                .spawn(move || worker(&shared, w))?;
            team.workers.push(join.thread().clone());
            team.joins.push(join);
        }
        Ok(team)
    }

    /// Threads that work on a job (the caller included).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` with this team as the current one, so the [`crate::par`] helpers called inside split
    /// their work across it. If another thread is using the team right now, `f` runs without it
    /// (single-threaded) rather than waiting.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return f();
        }
        struct Reset<'a>(&'a AtomicBool, *const Team);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.1));
                self.0.store(false, Ordering::Release);
            }
        }
        let previous = CURRENT.with(|c| c.replace(self));
        let _reset = Reset(&self.busy, previous);
        f()
    }

    /// The team installed on the calling thread, if any.
    pub fn current<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
        let p = CURRENT.with(|c| c.get());
        // SAFETY: `CURRENT` is only set by `install`, which resets it before the borrow of the team
        // it was given ends, so a non-null pointer refers to a live team.
        f(unsafe { p.as_ref() })
    }

    /// Calls `f(i)` for every `i` in `0..tasks`, each exactly once, spread over the team; returns when
    /// all have finished. A panic in any task is raised here (as a new panic) once all have finished.
    /// Only the thread that installed the team calls this (through [`crate::par`]); inside the tasks
    /// no team is current, so nested parallel helpers run serially.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.workers.is_empty() || tasks > MAX_TASKS {
            (0..tasks).for_each(f);
            return;
        }
        let sh = &*self.shared;
        let job: Job<'_> = f;
        sh.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        sh.done.store(0, Ordering::Relaxed);
        sh.panicked.store(false, Ordering::Relaxed);
        let epoch = epoch_of(sh.state.load(Ordering::Relaxed)) + 1;
        // SeqCst pairs with the workers' `sleeping` store + state load before they park: either this
        // store is seen there, or their `sleeping` flag is seen below and they are unparked.
        sh.state.store(pack(epoch, tasks, 0), Ordering::SeqCst);
        for (flag, worker) in sh.sleeping.iter().zip(&self.workers) {
            if flag.load(Ordering::SeqCst) && flag.swap(false, Ordering::SeqCst) {
                worker.unpark();
            }
        }

        // The caller works on the job too; no team is current inside its tasks.
        let previous = CURRENT.with(|c| c.replace(std::ptr::null()));
        while let Some(i) = sh.claim(epoch) {
            sh.run_task(i);
        }
        CURRENT.with(|c| c.set(previous));
        // Every task is claimed; wait for those still running elsewhere (they use `f`, which lives
        // in this frame). Spin briefly, then yield the core to the thread that holds them.
        let start = Instant::now();
        let mut spins = 0u32;
        while sh.done.load(Ordering::Acquire) < tasks {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > CALLER_SPIN {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if sh.panicked.load(Ordering::Relaxed) {
            panic!("a task of a parallel step panicked on a worker thread");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::SeqCst);
        for w in &self.workers {
            w.unpark();
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

fn worker(sh: &Shared, w: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a job newer than the last one seen: spin, then park.
        let mut start = Instant::now();
        let mut spins = 0u32;
        loop {
            if sh.quit.load(Ordering::Acquire) {
                return;
            }
            let e = epoch_of(sh.state.load(Ordering::Acquire));
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            sh.sleeping[w].store(true, Ordering::SeqCst);
            if epoch_of(sh.state.load(Ordering::SeqCst)) == seen && !sh.quit.load(Ordering::SeqCst)
            {
                thread::park();
            }
            sh.sleeping[w].store(false, Ordering::SeqCst);
            start = Instant::now();
        }
        while let Some(i) = sh.claim(seen) {
            sh.run_task(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once() {
        for threads in 1..=4 {
            let team = Team::new(threads).unwrap();
            for tasks in [0, 1, 2, 3, 7, 64, 257, MAX_TASKS, MAX_TASKS + 1] {
                let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                team.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_small_jobs_and_parking() {
        let team = Team::new(3).unwrap();
        let sum = AtomicUsize::new(0);
        for round in 0..2000 {
            team.run(5, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            if round % 500 == 0 {
                // Let the workers park, so the next job has to wake them.
                thread::sleep(SPIN * 5);
            }
        }
        assert_eq!(sum.load(Ordering::Relaxed), 2000 * 10);
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_team_still_works() {
        let team = Team::new(2).unwrap();
        for _ in 0..20 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                team.run(16, &|i| assert!(i != 5, "task 5 fails"));
            }));
            assert!(r.is_err());
        }
        let n = AtomicUsize::new(0);
        team.run(16, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn install_sets_the_current_team_and_concurrent_users_run_alone() {
        let team = Team::new(2).unwrap();
        assert!(Team::current(|t| t.is_none()));
        team.install(|| {
            assert_eq!(Team::current(|t| t.map(Team::threads)), Some(2));
            // A second thread finds the team busy and runs without it.
            thread::scope(|s| {
                s.spawn(|| team.install(|| assert!(Team::current(|t| t.is_none()))));
            });
        });
        assert!(Team::current(|t| t.is_none()));
    }
}
