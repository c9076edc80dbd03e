//! Exact discrete Laplace noise (Canonne, Kamath and Steinke, "The Discrete Gaussian for
//! Differential Privacy", 2020, algorithms 1 and 2).
//!
//! The sampler uses only uniform integers from a cryptographic generator and integer
//! arithmetic on rationals, so its output distribution is exactly the discrete Laplace
//! distribution: there are no floating-point gaps for an attacker to read (Mironov 2012).
//! Released values that are not integers are first snapped to a grid (see
//! [`Mechanism::release`]), so every released value is an integer number of grid steps
//! plus integer noise.

use rand::Rng;
use rand::rngs::OsRng;

/// `Bernoulli(num / den)`, `0 ≤ num ≤ den`, `den > 0`.
fn bernoulli(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    rng.gen_range(0..den) < num
}

/// `Bernoulli(exp(-num / den))` for `num ≥ 0`, `den > 0` (CKS algorithm 1).
fn bernoulli_exp_neg(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    let mut whole = num / den;
    while whole > 0 {
        if !bernoulli_exp_neg_fraction(rng, 1, 1) {
            return false;
        }
        whole -= 1;
    }
    bernoulli_exp_neg_fraction(rng, num % den, den)
}

/// `Bernoulli(exp(-γ))` for `γ = num / den ∈ [0, 1]`.
fn bernoulli_exp_neg_fraction(rng: &mut impl Rng, num: u128, den: u128) -> bool {
    let mut k: u128 = 1;
    // Each step succeeds with probability γ / k ≤ 1 / k: the loop ends after a few steps.
    while bernoulli(rng, num, den.saturating_mul(k)) {
        k += 1;
    }
    k % 2 == 1
}

/// One draw of the discrete Laplace distribution with scale `scale_num / scale_den`:
/// `P(Z = z) ∝ exp(-|z| · scale_den / scale_num)` (CKS algorithm 2 with `t = scale_num`,
/// `s = scale_den`).
pub(crate) fn discrete_laplace(rng: &mut impl Rng, scale_num: u128, scale_den: u128) -> i128 {
    let (t, s) = (scale_num.max(1), scale_den.max(1));
    loop {
        let u = rng.gen_range(0..t);
        if !bernoulli_exp_neg(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp_neg(rng, 1, 1) {
            v += 1;
        }
        let x = u + t.saturating_mul(v);
        let y = x / s;
        let negative = rng.gen_bool(0.5);
        if negative && y == 0 {
            continue;
        }
        let y = i128::try_from(y).unwrap_or(i128::MAX);
        return if negative { -y } else { y };
    }
}

/// ε in millionths, so that scales are exact rationals.
pub(crate) const EPSILON_UNIT: u128 = 1_000_000;

/// The discrete Laplace mechanism for one released statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mechanism {
    /// The statistic's sensitivity, in grid steps.
    pub sensitivity_steps: u128,
    /// ε in millionths (> 0).
    pub epsilon_micro: u128,
    /// The grid a released value is snapped to (1 for counts).
    pub step: f64,
}

impl Mechanism {
    /// A mechanism for a statistic whose value moves by at most `sensitivity` when one
    /// privacy unit's rows are added or removed, spending `epsilon`. Values are snapped to
    /// `step`; the snapping adds at most one step to the sensitivity.
    pub fn new(sensitivity: f64, epsilon: f64, step: f64) -> Mechanism {
        let step = if step.is_finite() && step > 0.0 {
            step
        } else {
            1.0
        };
        let steps = (sensitivity / step).ceil().max(0.0) as u128 + u128::from(step != 1.0);
        Mechanism {
            sensitivity_steps: steps.max(1),
            epsilon_micro: ((epsilon * EPSILON_UNIT as f64).round() as u128).max(1),
            step,
        }
    }

    /// The noise's standard deviation, in the statistic's units: √2 · scale.
    pub fn standard_deviation(&self) -> f64 {
        let scale = self.sensitivity_steps as f64 * EPSILON_UNIT as f64 / self.epsilon_micro as f64;
        std::f64::consts::SQRT_2 * scale * self.step
    }

    /// The value plus noise, snapped to the grid.
    pub fn release(&self, value: f64, rng: &mut impl Rng) -> f64 {
        let steps = (value / self.step).round();
        let steps = if steps.is_finite() {
            steps.clamp(-1e30, 1e30) as i128
        } else {
            0
        };
        let noise = discrete_laplace(
            rng,
            self.sensitivity_steps.saturating_mul(EPSILON_UNIT),
            self.epsilon_micro,
        );
        steps.saturating_add(noise) as f64 * self.step
    }

    /// The threshold a noisy count must reach so that a count of `floor` passes it with
    /// probability at most `delta`: `floor + scale · ln(1 / (2δ))`.
    pub fn threshold_above(&self, floor: f64, delta: f64) -> f64 {
        let scale = self.sensitivity_steps as f64 * EPSILON_UNIT as f64 / self.epsilon_micro as f64;
        let delta = delta.clamp(1e-300, 0.5);
        (floor + scale * self.step * (1.0 / (2.0 * delta)).ln()).ceil()
    }
}

/// The generator every release draws from: the operating system's.
pub(crate) fn rng() -> OsRng {
    OsRng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn discrete_laplace_has_the_right_shape() {
        // Scale 2: P(0) = (1 - e^{-1/2}) / (1 + e^{-1/2}); the mean is 0; the variance is
        // 2 e^{-1/2} / (1 - e^{-1/2})^2.
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let n = 200_000;
        let draws: Vec<i128> = (0..n).map(|_| discrete_laplace(&mut rng, 2, 1)).collect();
        let a = (-0.5f64).exp();
        let p0 = (1.0 - a) / (1.0 + a);
        let zeros = draws.iter().filter(|d| **d == 0).count() as f64 / n as f64;
        assert!((zeros - p0).abs() < 0.01, "P(0) {zeros} vs {p0}");
        let mean = draws.iter().sum::<i128>() as f64 / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        let var = draws.iter().map(|d| (*d as f64).powi(2)).sum::<f64>() / n as f64;
        let want = 2.0 * a / (1.0 - a).powi(2);
        assert!((var - want).abs() / want < 0.03, "variance {var} vs {want}");
        // Symmetric: as many positive as negative draws.
        let pos = draws.iter().filter(|d| **d > 0).count() as f64;
        let neg = draws.iter().filter(|d| **d < 0).count() as f64;
        assert!((pos - neg).abs() / n as f64 <= 0.01);
    }

    #[test]
    fn a_fractional_scale_is_exact_too() {
        // Scale 1/3: P(0) = (1 - e^{-3}) / (1 + e^{-3}).
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let n = 100_000;
        let zeros = (0..n)
            .filter(|_| discrete_laplace(&mut rng, 1, 3) == 0)
            .count() as f64
            / n as f64;
        let a = (-3.0f64).exp();
        assert!((zeros - (1.0 - a) / (1.0 + a)).abs() < 0.01, "{zeros}");
    }

    #[test]
    fn mechanism_scales_and_thresholds() {
        let m = Mechanism::new(10.0, 0.5, 1.0);
        assert_eq!(m.sensitivity_steps, 10);
        // Scale 20: standard deviation 20√2.
        assert!((m.standard_deviation() - 28.284).abs() < 0.01);
        // A count of 10 passes 10 + 20 ln(1/2δ) with probability δ.
        let t = m.threshold_above(10.0, 1e-6);
        assert!(
            (t - (10.0 + 20.0 * (5e5f64).ln()).ceil()).abs() < 1e-9,
            "{t}"
        );
        // Sums are snapped to their step; snapping adds one step of sensitivity.
        let s = Mechanism::new(1000.0, 1.0, 0.5);
        assert_eq!(s.sensitivity_steps, 2001);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let v = s.release(1234.3, &mut rng);
        assert!(
            (v / 0.5 - (v / 0.5).round()).abs() < 1e-9,
            "{v} is on the grid"
        );
    }
}
