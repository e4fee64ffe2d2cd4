//! Progress bars on stderr when it is a terminal; silence otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows training stages as a spinner and counted steps (trees) as a bar.
pub struct Bars {
    bar: Option<Mutex<ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            Mutex::new(b)
        });
        Self { bar }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.lock().expect("progress lock").finish_and_clear();
        }
    }
}

impl predict_buy_model::Progress for Bars {
    fn stage(&self, name: &str) {
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
