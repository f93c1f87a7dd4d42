use super::*;
use crate::offcpu::{Cause, ThreadRef};

fn thread(ev: &mut Evidence, tid: u32) -> ThreadId {
    ev.thread(&ThreadRef {
        pid: 1,
        tid,
        comm: format!("t{tid}"),
    })
}

fn cpu(ev: &mut Evidence, t: ThreadId, stack: &[&str], ms: f64) {
    let frames = ev.frames(stack.iter().copied());
    ev.stacks.push(Stack {
        thread: t,
        frames,
        cpu_ns: ms * 1e6,
        off_cpu_ns: [0.0; 6],
        waiting_in: None,
    });
}

fn wait(ev: &mut Evidence, t: ThreadId, waker: Actor, cause: Cause, ms: f64) {
    let frames = match cause {
        Cause::Sleep => ev.frames(["main", "nap"]),
        _ => ev.frames(["main", "serve", "lock"]),
    };
    let mut off = [0.0; 6];
    off[cause as usize] = ms * 1e6;
    ev.stacks.push(Stack {
        thread: t,
        frames: frames.clone(),
        cpu_ns: 0.0,
        off_cpu_ns: off,
        waiting_in: None,
    });
    let waker_frames = match waker {
        Actor::Thread(_) => ev.frames(["main", "serve", "unlock"]),
        Actor::Kernel(_) => Vec::new(),
    };
    ev.waits.push(Wait {
        wakee: t,
        wakee_frames: frames,
        waker,
        waker_frames,
        cause,
        ns: ms * 1e6,
        count: 1.0,
    });
}

/// Four request threads that queue on a lock, and a housekeeping thread burning more CPU than
/// any of them but waited on by nobody.
fn lock_bound() -> Evidence {
    lock_bound_with(50.0, 400.0)
}

/// [`lock_bound`] with the holder's CPU time per request thread and the housekeeping's, ms.
fn lock_bound_with(holder_ms: f64, housekeeping_ms: f64) -> Evidence {
    let mut ev = Evidence::new(1.0);
    let frontends: Vec<ThreadId> = (0..4).map(|i| thread(&mut ev, 10 + i)).collect();
    for (i, &t) in frontends.iter().enumerate() {
        cpu(&mut ev, t, &["main", "serve", "parse"], 10.0);
        cpu(&mut ev, t, &["main", "serve", "holder"], holder_ms);
        cpu(&mut ev, t, &["main", "serve", "reply"], 10.0);
        let other = frontends[(i + 1) % 4];
        wait(&mut ev, t, Actor::Thread(other), Cause::Lock, 100.0);
    }
    let hk = thread(&mut ev, 99);
    cpu(&mut ev, hk, &["main", "housekeeping"], housekeeping_ms);
    wait(
        &mut ev,
        hk,
        Actor::Kernel(Cause::Sleep),
        Cause::Sleep,
        100.0,
    );
    ev
}

fn score(ev: &Evidence, analysis: &Analysis, method: Method, f: &str) -> f64 {
    let id = ev.function_id(f).expect("the function");
    analysis.scores(ev, method, None)[id as usize]
}

/// The CPU top list names the housekeeping thread; the critical path names the lock holder and
/// gives housekeeping nothing, since no request thread waits for it.
#[test]
fn critical_path_is_not_the_cpu_top_list() {
    let ev = lock_bound();
    let a = Analysis::new(&ev);
    assert_eq!(rank(&ev, &a, Method::Cpu, None)[0].0, "housekeeping");
    assert_eq!(rank(&ev, &a, Method::CriticalPath, None)[0].0, "holder");
    assert_eq!(score(&ev, &a, Method::CriticalPath, "housekeeping"), 0.0);
    assert_eq!(a.blame.request_threads.len(), 4);
    // Every request thread's time is accounted for (the threads wait only for each other: the
    // cascade converges to their own functions).
    let shares: f64 = a.blame.shares[0].values().sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    // Lock waits are charged to the other threads' functions in proportion to their CPU time:
    // the holder gets 5/7 of the redistributed share, like its share of the CPU.
    let (holder, parse) = (
        score(&ev, &a, Method::CriticalPath, "holder"),
        score(&ev, &a, Method::CriticalPath, "parse"),
    );
    assert!((holder / parse - 5.0).abs() < 1e-6, "{holder} {parse}");
}

/// A wait for a thread that itself waits for a timer cascades to the timer.
#[test]
fn waits_cascade() {
    let mut ev = Evidence::new(1.0);
    let (a, b) = (thread(&mut ev, 1), thread(&mut ev, 2));
    cpu(&mut ev, a, &["main", "a_work"], 100.0);
    wait(&mut ev, a, Actor::Thread(b), Cause::Io, 300.0);
    cpu(&mut ev, b, &["main", "b_work"], 100.0);
    wait(&mut ev, b, Actor::Kernel(Cause::Sleep), Cause::Sleep, 300.0);
    let analysis = Analysis::new(&ev);
    let shares = &analysis.blame.shares[a as usize];
    let b_work = ev.function_id("b_work").unwrap();
    // a: 1/4 own work, 3/4 waiting for b, which spends 1/4 working and 3/4 asleep.
    assert!((shares[&Sink::Function(b_work)] - 0.75 * 0.25).abs() < 1e-9);
    assert!((shares[&Sink::Kernel(Cause::Sleep)] - 0.75 * 0.75).abs() < 1e-9);
    let path = analysis
        .waits
        .critical_path(&analysis.blame.request_threads);
    let actors: Vec<Actor> = path.iter().map(|s| s.actor).collect();
    assert_eq!(
        actors,
        [
            Actor::Thread(a),
            Actor::Thread(b),
            Actor::Kernel(Cause::Sleep)
        ]
    );
}

/// A lock waiter whose waits are split over the holder and the other waiters (each wakes the
/// next when it lets go) is still bound by its waits: the path goes on to the holder although
/// no single wait is longer than the waiter's own CPU time.
#[test]
fn critical_path_follows_a_thread_bound_by_several_waits() {
    let mut ev = Evidence::new(1.0);
    let (waiter, holder, other) = (thread(&mut ev, 1), thread(&mut ev, 2), thread(&mut ev, 3));
    cpu(&mut ev, waiter, &["main", "waiter_work"], 300.0);
    wait(&mut ev, waiter, Actor::Thread(holder), Cause::Lock, 250.0);
    wait(&mut ev, waiter, Actor::Thread(other), Cause::Lock, 200.0);
    wait(
        &mut ev,
        waiter,
        Actor::Kernel(Cause::RunQueue),
        Cause::RunQueue,
        250.0,
    );
    cpu(&mut ev, holder, &["main", "critical_section"], 900.0);
    cpu(&mut ev, other, &["main", "waiter_work"], 300.0);
    wait(&mut ev, other, Actor::Thread(holder), Cause::Lock, 450.0);
    let analysis = Analysis::new(&ev);
    let path = analysis.waits.critical_path(&[waiter]);
    let actors: Vec<Actor> = path.iter().map(|s| s.actor).collect();
    assert_eq!(actors, [Actor::Thread(waiter), Actor::Thread(holder)]);
    // Waits shorter than the CPU time in all end the path at the thread.
    let mut ev = Evidence::new(1.0);
    let (busy, helper) = (thread(&mut ev, 1), thread(&mut ev, 2));
    cpu(&mut ev, busy, &["main", "busy_work"], 600.0);
    wait(&mut ev, busy, Actor::Thread(helper), Cause::Lock, 300.0);
    cpu(&mut ev, helper, &["main", "helper_work"], 900.0);
    let analysis = Analysis::new(&ev);
    let path = analysis.waits.critical_path(&[busy]);
    assert_eq!(path.len(), 1, "{path:?}");
}

/// Two threads waiting only for each other, waited for by a third, form a knot; its weight is
/// the third thread's wait, spread over the knot's functions by CPU time.
#[test]
fn knots() {
    let mut ev = Evidence::new(1.0);
    let (a, b, c) = (thread(&mut ev, 1), thread(&mut ev, 2), thread(&mut ev, 3));
    cpu(&mut ev, a, &["main", "client"], 10.0);
    wait(&mut ev, a, Actor::Thread(b), Cause::Lock, 90.0);
    cpu(&mut ev, b, &["main", "left"], 30.0);
    wait(&mut ev, b, Actor::Thread(c), Cause::Lock, 20.0);
    cpu(&mut ev, c, &["main", "right"], 10.0);
    wait(&mut ev, c, Actor::Thread(b), Cause::Lock, 20.0);
    let analysis = Analysis::new(&ev);
    let knots = analysis.waits.knots();
    assert_eq!(knots.len(), 1);
    assert_eq!(knots[0].threads, vec![b, c]);
    assert!((knots[0].waited_on_ns - 90e6).abs() < 1.0);
    let left = score(&ev, &analysis, Method::Knot, "left");
    let right = score(&ev, &analysis, Method::Knot, "right");
    assert!((left - 0.09 * 0.75).abs() < 1e-9 && (right - 0.09 * 0.25).abs() < 1e-9);
    assert_eq!(score(&ev, &analysis, Method::Knot, "client"), 0.0);
}

/// The call graph's self and inclusive times, and the CPU delta against a baseline normalized
/// by window length.
#[test]
fn call_graph_and_delta() {
    let ev = lock_bound();
    let a = Analysis::new(&ev);
    let serve = ev.function_id("serve").unwrap();
    let t = &a.calls.times[serve as usize];
    assert_eq!(t.cpu_self_ns, 0.0);
    assert!((t.cpu_total_ns - 280e6).abs() < 1.0);
    assert!((t.off_cpu_total_ns[Cause::Lock as usize] - 400e6).abs() < 1.0);
    assert_eq!(t.threads, 4);
    let holder = ev.function_id("holder").unwrap();
    let callers = a.calls.callers(holder);
    assert_eq!(callers.len(), 1);
    assert_eq!(callers[0].0, serve);
    assert!((callers[0].1.cpu_ns - 200e6).abs() < 1.0);

    // The same work over a window twice as long, with the holder 50% slower.
    let mut after = Evidence::new(2.0);
    let t = thread(&mut after, 10);
    cpu(&mut after, t, &["main", "serve", "parse"], 80.0);
    cpu(&mut after, t, &["main", "serve", "holder"], 600.0);
    let b = Analysis::new(&after);
    let ranked = rank(&after, &b, Method::CpuDelta, Some((&a, &ev)));
    assert_eq!(ranked[0].0, "holder");
    assert!((ranked[0].1 - (0.3 - 0.2)).abs() < 1e-9, "{ranked:?}");
}

/// A request thread waiting for a device thread whose service time is a sleep inside its
/// function: the wait is charged to that function, not to the kernel's timer.
#[test]
fn kernel_waits_are_charged_to_the_function_blocked_in() {
    let mut ev = Evidence::new(1.0);
    let (client, device) = (thread(&mut ev, 1), thread(&mut ev, 2));
    cpu(&mut ev, client, &["main", "prepare"], 100.0);
    wait(&mut ev, client, Actor::Thread(device), Cause::Io, 400.0);
    cpu(&mut ev, device, &["main", "device_service"], 10.0);
    let frames = ev.frames(["main", "device_service", "nanosleep"]);
    let service = ev.function_id("device_service").unwrap();
    let mut off = [0.0; 6];
    off[Cause::Sleep as usize] = 390e6;
    ev.stacks.push(Stack {
        thread: device,
        frames: frames.clone(),
        cpu_ns: 0.0,
        off_cpu_ns: off,
        waiting_in: Some(service),
    });
    ev.waits.push(Wait {
        wakee: device,
        wakee_frames: frames,
        waker: Actor::Kernel(Cause::Sleep),
        waker_frames: Vec::new(),
        cause: Cause::Sleep,
        ns: 390e6,
        count: 1.0,
    });
    let a = Analysis::new(&ev);
    assert_eq!(
        rank(&ev, &a, Method::CriticalPath, None)[0].0,
        "device_service"
    );
    assert_eq!(rank(&ev, &a, Method::Cpu, None)[0].0, "prepare");
    let shares = &a.blame.shares[client as usize];
    assert!(
        (shares[&Sink::Function(service)] - 0.8).abs() < 1e-9,
        "{shares:?}"
    );
    assert!(!shares.contains_key(&Sink::Kernel(Cause::Sleep)));
}

/// A deploy that makes the lock holder slower while housekeeping, which no request waits for,
/// grows five times as much in CPU: with the windows' waits `regressions` ranks the holder
/// first (its critical-path share grew), the on-CPU growth would name housekeeping. Without
/// waits the ranking is the on-CPU growth's, and a model's scores reorder the suspects.
#[test]
fn regressions_rank_by_critical_path_growth() {
    let before = lock_bound_with(50.0, 400.0);
    let after = lock_bound_with(60.0, 600.0);
    let (ab, aa) = (Analysis::new(&before), Analysis::new(&after));
    let mut s = regressions((&before, &ab), (&after, &aa), &Dispersion::poisson());
    assert_eq!(Ranking::of(&before, &after), Ranking::CriticalPathDelta);
    assert!(s.iter().all(|x| !x.regression), "{s:?}");
    assert_eq!(s[0].function, "holder", "{s:?}");
    let hk = s.iter().find(|x| x.function == "housekeeping").unwrap();
    assert!(hk.delta > 4.0 * s[0].delta, "{s:?}");
    assert_eq!(hk.critical_path_after, 0.0);
    assert!(s[0].critical_path_after > s[0].critical_path_before);
    // Without a timeline, the growth of the share.
    assert_eq!(s[0].path_per_s_after, None);
    assert_eq!(
        s[0].score,
        s[0].critical_path_after - s[0].critical_path_before
    );

    // No waits: on-CPU growth.
    let strip = |mut ev: Evidence| {
        ev.waits.clear();
        ev.stacks.retain(|st| st.cpu_ns > 0.0);
        ev
    };
    let (before, after) = (strip(before), strip(after));
    let (ab, aa) = (Analysis::new(&before), Analysis::new(&after));
    let cpu = regressions((&before, &ab), (&after, &aa), &Dispersion::poisson());
    assert_eq!(Ranking::of(&before, &after), Ranking::CpuDelta);
    assert_eq!(cpu[0].function, "housekeeping", "{cpu:?}");

    // A model's scores: `parse` first; a function it did not score comes last.
    let scores: std::collections::HashMap<String, f64> =
        [("parse".to_owned(), 2.0), ("holder".to_owned(), 1.0)].into();
    rank_by(&mut s, &scores);
    let order: Vec<&str> = s.iter().map(|x| x.function.as_str()).collect();
    assert_eq!(&order[..2], ["parse", "holder"], "{s:?}");
    assert_eq!(s[0].score, 2.0);
    assert!(s[2..].iter().all(|x| x.score < 1.0), "{s:?}");
}
