//! A model file's problems, each located (file, line, column) with the offending line.

use std::fmt;

/// One problem in a model file, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFileError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// The offending source line, for display.
    pub source_line: String,
    /// How many characters to underline.
    pub width: usize,
}

impl fmt::Display for ModelFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if self.line == 0 {
            write!(f, "\n  --> {}", self.file)?;
        } else {
            let n = self.line.to_string();
            let pad = " ".repeat(n.len());
            write!(f, "\n{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
            write!(f, "\n{pad} |\n{n} | {}", self.source_line)?;
            write!(f, "\n{pad} | {}{}", " ".repeat(self.column - 1), "^".repeat(self.width.max(1)))?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  = help: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a model file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFileErrors(pub Vec<ModelFileError>);

impl fmt::Display for ModelFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join("\n\n"))
    }
}

impl std::error::Error for ModelFileErrors {}
