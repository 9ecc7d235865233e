//! `haproxy.cfg` into a Sluice configuration document: `sluice-cp import FILE` prints it.
//! The file is read as HAProxy reads it ([`lexer`]); each section maps to the document
//! ([`sections`]): `global`'s TLS defaults onto TLS binds, each `defaults` section onto
//! the proxies that follow it, `frontend`, `backend` and `listen` onto frontends and
//! backends. Nothing is dropped silently: every directive or argument without a Sluice
//! equivalent, or mapped with a difference, is a [`Note`] with its line. Nothing is
//! stored: the document goes through `PUT /api/v1/config` like any other.

pub mod lexer;
mod sections;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use lexer::SyntaxError;

/// What a note says about a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// No Sluice equivalent: not in the document.
    Unsupported,
    /// In the document, with a difference in behaviour the note explains.
    Difference,
    /// Something to do by hand (e.g. upload a certificate).
    Action,
}

/// One remark of the import report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Note {
    pub line: usize,
    /// The directive as written (its first words).
    pub directive: String,
    pub kind: NoteKind,
    pub message: String,
}

/// An imported configuration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Imported {
    /// The configuration document (`PUT /api/v1/config`).
    #[schema(value_type = Object)]
    pub document: Value,
    pub report: Vec<Note>,
}

/// Imports `text`; `read_file` reads a file the configuration names (errorfiles), `None`
/// when it cannot.
pub fn import(
    text: &str,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, SyntaxError> {
    let lines = lexer::lex(text)?;
    Ok(sections::Importer::new(read_file).run(&lines))
}

#[cfg(test)]
mod tests;
