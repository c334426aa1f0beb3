//! The job runtime: what a running job uses — its [`JobContext`], the
//! [`Undo`] stack and its durable mirror the [`Journal`], the [`Resource`]
//! kinds and the [`Reap`] trait their owners implement, scratch files, and
//! event emission. It depends only on `template` (the plan) and `ui` (the
//! bus); builders, communicators and provisioners build on it, and the
//! engine orchestrates jobs on top of it.

pub mod context;
pub mod emit;
pub mod journal;
pub mod process;
pub mod resource;
pub mod scratch;
pub mod undo;

pub use context::JobContext;
pub use journal::{sanitize, Journal, JournalEntry};
pub use resource::{OwnedResource, Reap, Reapers, Resource, ResourceKind};
pub use undo::{Undo, UndoHandle};
