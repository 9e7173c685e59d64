//! Wait estimates: how long a queued client can expect to wait.
//!
//! The estimate for the client at position `p` is `p` divided by the recent
//! rate of promotions, rounded up to whole seconds. The rate is a moving
//! average: promotions are counted per second over the last five minutes,
//! and each second weighs `e^(-age / 30 s)`, so the estimate follows a
//! change of pace within half a minute or so while one quiet or busy second
//! barely moves it.
//!
//! The average is taken over the time someone was waiting, not over the
//! clock: while the queue is empty nobody can be promoted, and counting
//! those seconds would make the first estimates after a quiet spell far
//! too long. Below [`MIN_PROMOTIONS`] promotions in the window there is no
//! estimate at all.
//!
//! [`PromotionRate`] is a plain type; [`WaitEstimate`] shares one between
//! admission, which records promotions and tells a newcomer its first
//! estimate, and the waitlist, which keeps everyone else's up to date.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window the rate is measured over.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Promotions the window must hold before any estimate is given.
pub const MIN_PROMOTIONS: u64 = 5;

/// The time constant of the moving average.
const TAU_S: f64 = 30.0;

const SECONDS: usize = WINDOW.as_secs() as usize;

/// Promotions and waiting time per second over the last [`WINDOW`].
#[derive(Debug)]
pub struct PromotionRate {
    start: Instant,
    /// Promotions in each second, indexed by second since `start` modulo
    /// the window.
    promoted: Box<[u32; SECONDS]>,
    /// Seconds (0 to 1) someone was waiting, per second.
    exposed: Box<[f32; SECONDS]>,
    /// The newest second the rings describe; older ones are cleared as
    /// time moves on.
    newest: u64,
    /// Since when someone has been waiting, while someone is.
    waiting_since: Option<Instant>,
    /// Weights by age in seconds.
    weights: Box<[f64; SECONDS]>,
}

impl PromotionRate {
    /// An empty history, starting at `now`.
    pub fn new(now: Instant) -> Self {
        let mut weights = Box::new([0.0; SECONDS]);
        for (age, w) in weights.iter_mut().enumerate() {
            *w = (-(age as f64) / TAU_S).exp();
        }
        Self {
            start: now,
            promoted: Box::new([0; SECONDS]),
            exposed: Box::new([0.0; SECONDS]),
            newest: 0,
            waiting_since: None,
            weights,
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Moves the rings on to `now`'s second, clearing the seconds passed.
    fn advance(&mut self, now: Instant) {
        let second = self.second(now);
        if second <= self.newest {
            return;
        }
        let passed = (second - self.newest).min(SECONDS as u64);
        for s in (second + 1 - passed)..=second {
            let i = (s % SECONDS as u64) as usize;
            self.promoted[i] = 0;
            self.exposed[i] = 0.0;
        }
        self.newest = second;
    }

    /// Adds the time from `from` to `to` to the seconds it covers.
    fn expose(&mut self, from: Instant, to: Instant) {
        let oldest = self.newest.saturating_sub(SECONDS as u64 - 1);
        let mut at = from.max(self.start + Duration::from_secs(oldest));
        while at < to {
            let second = self.second(at);
            let end = (self.start + Duration::from_secs(second + 1)).min(to);
            let i = (second % SECONDS as u64) as usize;
            self.exposed[i] += (end - at).as_secs_f32();
            at = end;
        }
    }

    /// The queue became non-empty (`true`) or empty (`false`) at `now`.
    pub fn waiting(&mut self, now: Instant, someone: bool) {
        self.advance(now);
        match (self.waiting_since, someone) {
            (None, true) => self.waiting_since = Some(now),
            (Some(since), false) => {
                self.expose(since, now);
                self.waiting_since = None;
            }
            _ => {}
        }
    }

    /// A client was promoted at `now`.
    pub fn promoted(&mut self, now: Instant) {
        self.advance(now);
        let i = (self.second(now) % SECONDS as u64) as usize;
        self.promoted[i] = self.promoted[i].saturating_add(1);
    }

    /// Promotions per second, averaged as the module describes; `None`
    /// below [`MIN_PROMOTIONS`] in the window.
    pub fn per_second(&mut self, now: Instant) -> Option<f64> {
        self.advance(now);
        let newest = self.newest;
        let (mut count, mut weighted, mut time) = (0u64, 0.0, 0.0);
        for age in 0..SECONDS.min(newest as usize + 1) {
            let second = newest - age as u64;
            let i = (second % SECONDS as u64) as usize;
            let w = self.weights[age];
            // The current stretch of waiting counts up to now, unclosed.
            let open = self.waiting_since.map_or(0.0, |since| {
                let begin = (self.start + Duration::from_secs(second)).max(since);
                let end = (self.start + Duration::from_secs(second + 1)).min(now);
                end.saturating_duration_since(begin).as_secs_f32()
            });
            count += u64::from(self.promoted[i]);
            weighted += w * f64::from(self.promoted[i]);
            time += w * f64::from(self.exposed[i] + open);
        }
        // A promotion needs someone waiting, but a burst of them within
        // a few milliseconds of the queue forming has next to no waiting
        // time behind it: a floor of one second keeps that finite.
        (count >= MIN_PROMOTIONS).then(|| weighted / time.max(1.0))
    }
}

/// Seconds until the client at `position` is expected to be promoted, at
/// `rate` promotions per second.
pub fn eta_seconds(position: u64, rate: f64) -> u64 {
    let eta = (position as f64 / rate).ceil();
    if eta.is_finite() {
        eta.min(u64::MAX as f64) as u64
    } else {
        u64::MAX
    }
}

/// Whether a client told `told` should now be told `now`: by the contract,
/// when the estimate moved by more than 10% or by more than 5 s, or when it
/// appeared or went away.
pub fn materially_changed(told: Option<u64>, now: Option<u64>) -> bool {
    match (told, now) {
        (Some(told), Some(now)) => {
            let change = told.abs_diff(now);
            change > 5 || change * 10 > told
        }
        (None, None) => false,
        _ => true,
    }
}

/// The promotion rate shared by admission and the waitlist.
#[derive(Debug)]
pub struct WaitEstimate {
    rate: Mutex<PromotionRate>,
}

impl Default for WaitEstimate {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitEstimate {
    pub fn new() -> Self {
        Self {
            rate: Mutex::new(PromotionRate::new(Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PromotionRate> {
        // Every critical section leaves the rings whole.
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admission: a client was promoted.
    pub fn promoted(&self) {
        self.lock().promoted(Instant::now());
    }

    /// Admission: whether someone is waiting now.
    pub fn waiting(&self, someone: bool) {
        self.lock().waiting(Instant::now(), someone);
    }

    /// Promotions per second now, if known.
    pub fn per_second(&self) -> Option<f64> {
        self.lock().per_second(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn no_estimate_below_five_promotions() {
        let t0 = Instant::now();
        let mut r = PromotionRate::new(t0);
        r.waiting(t0, true);
        for i in 0..4 {
            r.promoted(at(t0, 1000 * i + 500));
        }
        assert_eq!(r.per_second(at(t0, 5000)), None);
        r.promoted(at(t0, 5500));
        assert!(r.per_second(at(t0, 6000)).is_some());
    }

    #[test]
    fn steady_rate_is_measured() {
        let t0 = Instant::now();
        let mut r = PromotionRate::new(t0);
        r.waiting(t0, true);
        // Two a second for a minute.
        for i in 0..120 {
            r.promoted(at(t0, 500 * i + 250));
        }
        let rate = r.per_second(at(t0, 60_000)).unwrap();
        assert!((rate - 2.0).abs() < 0.1, "{rate}");
    }

    #[test]
    fn time_nobody_waited_does_not_count() {
        let t0 = Instant::now();
        let mut r = PromotionRate::new(t0);
        // A minute of an empty queue, then ten seconds at 10 a second.
        r.waiting(at(t0, 60_000), true);
        for i in 0..100 {
            r.promoted(at(t0, 60_000 + 100 * i + 50));
        }
        let rate = r.per_second(at(t0, 70_000)).unwrap();
        assert!((rate - 10.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn a_change_of_pace_shows_within_minutes() {
        let t0 = Instant::now();
        let mut r = PromotionRate::new(t0);
        r.waiting(t0, true);
        // Ten a second for two minutes, then one a second for three.
        for i in 0..1200 {
            r.promoted(at(t0, 100 * i + 50));
        }
        let fast = r.per_second(at(t0, 120_000)).unwrap();
        for i in 0..180 {
            r.promoted(at(t0, 120_000 + 1000 * i + 500));
        }
        let slow = r.per_second(at(t0, 300_000)).unwrap();
        assert!(fast > 9.0, "{fast}");
        assert!(slow < 1.5, "{slow}");
    }

    #[test]
    fn promotions_leave_the_window() {
        let t0 = Instant::now();
        let mut r = PromotionRate::new(t0);
        r.waiting(t0, true);
        for i in 0..10 {
            r.promoted(at(t0, 100 * i));
        }
        assert!(r.per_second(at(t0, 2_000)).is_some());
        assert_eq!(r.per_second(at(t0, 302_000)), None);
    }

    #[test]
    fn eta_rounds_up() {
        assert_eq!(eta_seconds(10, 2.0), 5);
        assert_eq!(eta_seconds(11, 2.0), 6);
        assert_eq!(eta_seconds(1, 1000.0), 1);
    }

    #[test]
    fn material_changes() {
        assert!(!materially_changed(Some(100), Some(95)));
        assert!(materially_changed(Some(100), Some(89)));
        assert!(materially_changed(Some(20), Some(14)));
        assert!(!materially_changed(Some(20), Some(18)));
        // Short waits: 10% of 8 s is under a second.
        assert!(materially_changed(Some(8), Some(7)));
        assert!(materially_changed(None, Some(3)));
        assert!(materially_changed(Some(3), None));
        assert!(!materially_changed(None, None));
    }
}
