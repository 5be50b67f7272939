//! Progress bars for long admin work: drawn on a terminal, silent in scripts and pipes.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar on stderr when stderr is a terminal; hidden otherwise.
fn on_terminal(len: Option<u64>, template: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(len, target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A bar counting `len` items of `what`.
pub fn items(len: u64, what: &str) -> ProgressBar {
    on_terminal(
        Some(len),
        &format!("{what} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"),
    )
}

/// A bar over `len` bytes read.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    on_terminal(
        Some(len),
        &format!("{what} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{eta}} left)"),
    )
}

/// A counter of items of unknown total.
pub fn counter(what: &str) -> ProgressBar {
    on_terminal(None, &format!("{{spinner}} {what}: {{pos}} ({{per_sec}})"))
}
