//! Fixed-point sums: what a histogram bin and a node hold.

/// Gradients are summed as fixed-point integers: integer sums are exact, so a
/// histogram does not depend on the order of its rows, and a parent-minus-sibling
/// histogram is exactly the histogram of the other child. 2^32 steps per unit keeps
/// 1e-10 resolution and leaves room for ten million rows of weight up to 200.
pub(crate) const SCALE: f64 = 4_294_967_296.0;

pub(crate) fn quantize(v: f64) -> i64 {
    // Truncation, not rounding: the error is below 2^-32 either way, and `round` is a
    // library call in the hottest setup loop.
    (v * SCALE) as i64
}

/// Sums of `g`, `h` and the row count over some rows: a node's or a bin's.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sums {
    pub(super) g: i64,
    pub(super) h: i64,
    pub(super) n: u32,
}

impl std::ops::AddAssign for Sums {
    fn add_assign(&mut self, o: Sums) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
}

impl Sums {
    pub(super) fn minus(self, o: Sums) -> Sums {
        Sums {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
    pub(super) fn g(&self) -> f64 {
        self.g as f64 / SCALE
    }
    pub(super) fn h(&self) -> f64 {
        self.h as f64 / SCALE
    }
}
