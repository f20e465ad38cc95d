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
    /// Pretty-printed JSON (one document per command), or JSON Lines for a stream (`logs`).
    Json,
}

/// Where results go.
#[derive(Debug)]
pub struct Output<W> {
    format: Format,
    out: W,
    /// The reader went away (closed pipe): later writes are dropped.
    closed: bool,
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
        Self {
            format,
            out,
            closed: false,
        }
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
        self.write(&text)
    }

    /// Writes one record of a stream (`logs`): its text form, or compact JSON on a line of its
    /// own (JSON Lines), flushed at once so that `--follow` shows events as they come.
    pub fn emit_line<V: Render>(&mut self, view: &V) -> Result<(), CtlError> {
        let text = match self.format {
            Format::Human => view.human(),
            Format::Json => {
                let mut json = serde_json::to_string(view).map_err(CtlError::Json)?;
                json.push('\n');
                json
            }
        };
        self.write(&text)
    }

    /// True once the reader has gone away (`shieldctl logs -f | head -3`): a stream can stop.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn write(&mut self, text: &str) -> Result<(), CtlError> {
        if self.closed {
            return Ok(());
        }
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(error) => Err(CtlError::Write(error)),
            Ok(()) => Ok(()),
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
    use crate::view::{LogEventView, ModeView, PreviewView};

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
        assert!(!output.is_closed());
        assert!(output.emit(&preview()).is_ok());
        assert!(output.is_closed());
        assert!(output.emit_line(&preview()).is_ok());
    }

    #[test]
    fn json_lines_are_compact_one_per_line() {
        let event = LogEventView {
            ts: "2026-11-28T21:00:00.123456Z".to_owned(),
            container: "0123".to_owned(),
            name: "web".to_owned(),
            action: "allow".to_owned(),
            target: "1.2.3.4".to_owned(),
            detail: "two\nlines".to_owned(),
        };
        let mut output = Output::new(Format::Json, Vec::new());
        output.emit_line(&event).unwrap();
        output.emit_line(&event).unwrap();
        let text = String::from_utf8(output.into_inner()).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["detail"], "two\nlines");
        }
        assert!(text.starts_with(r#"{"ts":"2026-11-28T21:00:00.123456Z","container":"0123","#));

        let mut output = Output::new(Format::Human, Vec::new());
        output.emit_line(&event).unwrap();
        assert_eq!(output.into_inner(), event.human().into_bytes());
    }
}
