//! `shield-hook` binary: see the library for what it does.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let exit = shield_hook::run(std::env::args_os().skip(1), std::io::stdin().lock());
    // Write errors are ignored: the exit code is what the runtime acts on.
    if let Some(text) = &exit.stdout {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
    if let Some(line) = &exit.stderr {
        let _ = writeln!(std::io::stderr().lock(), "shield-hook: {line}");
    }
    ExitCode::from(exit.code)
}
