//! The template engine: reads a TOML template, checks it against the
//! schema of every source and provisioner type, resolves variables, secrets,
//! locals and `${…}`, and yields a [`BuildPlan`]. Two stages, as in
//! ripgrep's flags: [`node`] mirrors the TOML with spans, [`plan`] is the
//! resolved result. Every input error is a [`Diagnostic`] with a place.
//!
//! Architecture invariant: nothing here starts a process, touches the
//! network or writes a file; `file()` and `ExistingFile` only read.

pub mod console;
pub mod diagnostic;
pub mod eval;
pub mod expr;
pub mod fmt;
pub mod inputs;
pub mod node;
pub mod plan;
pub mod resolve;
pub mod schema;
pub mod strpos;
pub mod value;
pub mod variables;

pub use diagnostic::{Diagnostic, Diagnostics, SourceFile, Span};
pub use plan::{
    BuildPlan, ImagePlan, JobPlan, PlanOptions, ProvisionerPlan, SecretDecl, SecretSource,
    VariablePlan,
};
pub use resolve::Template;
pub use schema::TemplateSchema;
pub use value::Value;
pub use variables::VarInputs;
