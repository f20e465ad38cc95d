//! The only place shieldctl writes to stdout and stderr.
//!
//! Results go to stdout (text or JSON); notes and errors go to stderr, prefixed `shieldctl: `.
//! Writes go through `io::Write` rather than `print!`, so that a closed pipe
//! (`shieldctl ps | head -1`) ends the command quietly instead of panicking.

use std::io::{self, Write};

use crate::error::CtlError;
use crate::render::Render;

/// Text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for people.
    Human,
    /// Pretty-printed JSON (one document per command).
    Json,
}

/// Where results go.
#[derive(Debug)]
pub struct Output<W> {
    format: Format,
    out: W,
}

impl Output<io::Stdout> {
    /// Results to the process's stdout.
    pub fn stdout(format: Format) -> Self {
        Self::new(format, io::stdout())
    }
}

impl<W: Write> Output<W> {
    /// Results to `out`.
    pub fn new(format: Format, out: W) -> Self {
        Self { format, out }
    }

    /// The chosen format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes one result in the chosen format.
    pub fn emit<V: Render>(&mut self, view: &V) -> Result<(), CtlError> {
        let text = match self.format {
            Format::Human => view.human(),
            Format::Json => {
                let mut json = serde_json::to_string_pretty(view).map_err(CtlError::Json)?;
                json.push('\n');
                json
            }
        };
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(CtlError::Write(error)),
            _ => Ok(()),
        }
    }

    /// Gives the writer back (tests).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A note for the user on stderr that is not a failure (`shieldctl: ...`).
pub fn notice(text: &str) {
    stderr_line(text);
}

/// The message of a failed command on stderr (`shieldctl: ...`).
pub fn report_error(text: &str) {
    stderr_line(text);
}

fn stderr_line(text: &str) {
    // Nowhere left to report a failing stderr.
    let _ = writeln!(io::stderr().lock(), "shieldctl: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ModeView, PreviewView};

    fn preview() -> PreviewView {
        PreviewView {
            profiles: vec!["base".to_owned()],
            mode: ModeView::Up,
            ruleset: "table inet shield {\n}\n".to_owned(),
        }
    }

    #[test]
    fn human_writes_the_text_form() {
        let mut output = Output::new(Format::Human, Vec::new());
        output.emit(&preview()).unwrap();
        assert_eq!(output.into_inner(), b"table inet shield {\n}\n");
    }

    #[test]
    fn json_writes_one_document_and_a_newline() {
        let mut output = Output::new(Format::Json, Vec::new());
        output.emit(&preview()).unwrap();
        let text = String::from_utf8(output.into_inner()).unwrap();
        assert!(text.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["mode"], "up");
        assert_eq!(value["profiles"][0], "base");
    }

    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_pipe_is_not_an_error() {
        let mut output = Output::new(Format::Human, ClosedPipe);
        assert!(output.emit(&preview()).is_ok());
    }
}
