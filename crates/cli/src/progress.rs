//! Progress bars on stderr when it is a terminal; silence otherwise. Each stage's
//! wall time and the process's CPU time in it are logged at `-v`, so a slow training
//! run says where its time went, and whether that stage kept every core busy.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows training stages as a spinner and counted steps (trees) as a bar.
pub struct Bars {
    bar: Option<Mutex<ProgressBar>>,
    /// The stage under way, when it began, and the process's CPU time then.
    current: Mutex<Option<(String, Instant, f64)>>,
}

impl Bars {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            Mutex::new(b)
        });
        Self {
            bar,
            current: Mutex::new(None),
        }
    }

    /// Logs the stage under way as done and starts `next`, if any.
    fn close_stage(&self, next: Option<&str>) {
        // Poison is ignored: this also runs in `drop`, perhaps while unwinding.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let cpu = cpu_seconds();
        if let Some((name, start, cpu_start)) = current.take() {
            let seconds = start.elapsed().as_secs_f64();
            tracing::info!(
                stage = %name,
                seconds = format!("{seconds:.3}"),
                cpu_seconds = format!("{:.3}", cpu - cpu_start),
                "stage done"
            );
        }
        *current = next.map(|n| (n.to_string(), Instant::now(), cpu));
    }

    pub fn finish(&self) {
        self.close_stage(None);
        if let Some(b) = &self.bar {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish_and_clear();
        }
    }
}

/// User and system CPU time of the whole process (every thread) so far; 0 if the
/// system will not say, which only blurs a log line.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// Finishing on drop clears the bar and logs the last stage on every way out,
/// early errors included.
impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

impl predict_buy_model::Progress for Bars {
    fn stage(&self, name: &str) {
        self.close_stage(Some(name));
        if let Some(b) = &self.bar {
            let b = b.lock().expect("progress lock");
            b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            b.set_message(name.to_string());
        }
    }

    fn tick(&self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            let b = b.lock().expect("progress lock");
            if b.length() != Some(total as u64) {
                b.set_length(total as u64);
                b.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} trees ({eta})")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
            }
            b.set_position(done as u64);
        }
    }
}
