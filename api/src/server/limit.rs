//! Limits per peer address (a token bucket each): the ingest rate of each pushing host, in body
//! bytes (the `host` label a batch carries is the sender's own word; the address is the
//! connection's), and the failed sign-ins of each client, so that a token cannot be guessed at
//! network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least a push costs, however small its body: a host sending empty pushes is held to
/// `rate / MIN_COST` requests a second.
pub const MIN_COST: u64 = 64 << 10;

/// Buckets kept before the idle ones are dropped.
const MAX_HOSTS: usize = 10_000;

/// The peer address of a request's connection, set by the server's accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// Failed sign-ins (a wrong bearer token, cookie or sign-in form) each client address may make
/// at once; then [`SIGN_IN_PER_MINUTE`].
pub const SIGN_IN_BURST: u64 = 10;

/// Failed sign-ins a minute each client address may make after its burst.
pub const SIGN_IN_PER_MINUTE: u64 = 10;

/// What each peer address may spend a second, with bursts of `burst`: body bytes (ingest) or
/// attempts (sign-ins).
pub struct HostLimiter {
    rate: f64,
    burst: f64,
    min_cost: u64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl HostLimiter {
    /// A limiter of `rate` body bytes a second per address, `burst` at once (at least one
    /// [`MIN_COST`]), each request costing at least [`MIN_COST`].
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: rate.max(1) as f64,
            burst: burst.max(MIN_COST) as f64,
            min_cost: MIN_COST,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A limiter of failed sign-ins: [`SIGN_IN_BURST`] at once per address, then
    /// [`SIGN_IN_PER_MINUTE`].
    pub fn sign_ins() -> Self {
        Self {
            rate: SIGN_IN_PER_MINUTE as f64 / 60.0,
            burst: SIGN_IN_BURST as f64,
            min_cost: 1,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `peer` could spend one request's least cost at `now`, taking nothing; when not,
    /// how long until it could.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(&peer) {
            Some(&(tokens, at)) => self.enough(self.filled(tokens, at, now), self.min_cost as f64),
            None => Ok(()),
        }
    }

    /// Takes `amount` (at least the least cost, at most the burst) from `peer`'s bucket at
    /// `now`; when it holds too few, takes nothing and says how long until it would hold enough.
    pub fn take(&self, peer: IpAddr, amount: u64, now: Instant) -> Result<(), Duration> {
        let cost = (amount.max(self.min_cost) as f64).min(self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_HOSTS && !buckets.contains_key(&peer) {
            // Full buckets are the same as none: drop them.
            buckets.retain(|_, &mut (tokens, at)| self.filled(tokens, at, now) < self.burst);
        }
        let (tokens, at) = buckets.entry(peer).or_insert((self.burst, now));
        let filled = self.filled(*tokens, *at, now);
        self.enough(filled, cost)?;
        *tokens = filled - cost;
        *at = now;
        Ok(())
    }

    /// A bucket that held `tokens` at `at`, refilled until `now`.
    fn filled(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.saturating_duration_since(at).as_secs_f64() * self.rate).min(self.burst)
    }

    /// Whether `filled` covers `cost`; when not, how long until it would.
    fn enough(&self, filled: f64, cost: f64) -> Result<(), Duration> {
        if filled >= cost {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - filled) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host gets its burst at once, then its rate; another host is not held back by it; a
    /// refusal says when enough will be there and takes nothing.
    #[test]
    fn hosts_get_their_rate_each() {
        let limiter = HostLimiter::new(1 << 20, 4 << 20);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(limiter.take(a, 1 << 20, t0).is_ok());
        }
        let wait = limiter.take(a, 1 << 20, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert!(
            limiter.take(b, 4 << 20, t0).is_ok(),
            "another host has its own bucket"
        );
        // Half a second later: half a MiB there, not enough; a second later: enough.
        let wait = limiter
            .take(a, 1 << 20, t0 + Duration::from_millis(500))
            .unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(
            limiter
                .take(a, 1 << 20, t0 + Duration::from_secs(1))
                .is_ok()
        );
        // Empty pushes cost MIN_COST each: 16 a second at 1 MiB/s.
        let t1 = t0 + Duration::from_secs(10);
        let taken = (0..100).filter(|_| limiter.take(a, 0, t1).is_ok()).count();
        assert_eq!(taken, (4 << 20) / MIN_COST as usize);
    }

    /// Sign-ins: a burst of failures, then one each 60/SIGN_IN_PER_MINUTE s; `check` tells
    /// without taking.
    #[test]
    fn failed_sign_ins_are_slowed() {
        let limiter = HostLimiter::sign_ins();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.check(a, t0).is_ok(), "an unknown client may try");
        for _ in 0..SIGN_IN_BURST {
            assert!(limiter.check(a, t0).is_ok());
            assert!(limiter.take(a, 1, t0).is_ok());
        }
        let wait = limiter.check(a, t0).unwrap_err();
        let period = 60.0 / SIGN_IN_PER_MINUTE as f64;
        assert!((wait.as_secs_f64() - period).abs() < 1e-6, "{wait:?}");
        assert!(limiter.take(a, 1, t0).is_err());
        let later = t0 + Duration::from_secs_f64(period);
        assert!(limiter.check(a, later).is_ok());
        assert!(limiter.take(a, 1, later).is_ok());
        assert!(limiter.check(a, later).is_err());
    }
}
