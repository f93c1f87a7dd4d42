//! Plain data types shared by the sampler and every analysis.

use serde::{Deserialize, Serialize};

/// Where a frame executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// User-space code.
    User,
    /// Kernel code.
    Kernel,
}

/// One symbolized stack frame. Inlined functions are frames of their own, marked `inlined`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function name, or `[unknown] <module>+0x<offset>` when it could not be resolved.
    pub function: String,
    /// Path of the module (executable, shared object) or `[kernel.kallsyms]`; `None` when unknown.
    pub module: Option<String>,
    /// GNU build-id of the module, lowercase hex, when it has one.
    pub build_id: Option<String>,
    /// Source file, when debug information has it.
    pub file: Option<String>,
    /// Source line, when debug information has it.
    pub line: Option<u32>,
    /// User or kernel code.
    pub kind: FrameKind,
    /// This frame was inlined into its caller (the next frame towards the root).
    pub inlined: bool,
}

impl Frame {
    /// A user frame with only a function and module name.
    pub fn user(function: impl Into<String>, module: impl Into<String>) -> Self {
        Self {
            function: function.into(),
            module: Some(module.into()),
            build_id: None,
            file: None,
            line: None,
            kind: FrameKind::User,
            inlined: false,
        }
    }

    /// A kernel frame with only a function name.
    pub fn kernel(function: impl Into<String>) -> Self {
        Self {
            function: function.into(),
            module: Some(KERNEL_MODULE.to_owned()),
            kind: FrameKind::Kernel,
            ..Self::user("", "")
        }
    }

    /// A frame whose address could not be symbolized: `[unknown] <module>+0x<offset>`, or
    /// `[unknown] 0x<address>` when not even the module is known.
    pub fn unknown(kind: FrameKind, module: Option<&str>, offset: u64) -> Self {
        let function = match module {
            Some(module) => format!("[unknown] {}+{offset:#x}", module_basename(module)),
            None => format!("[unknown] {offset:#x}"),
        };
        Self {
            function,
            module: module.map(str::to_owned),
            kind,
            ..Self::user("", "")
        }
    }

    /// The marker at the root of a user stack that could not be unwound to its first frame
    /// ([`TRUNCATED`]): what lies above is unknown, rather than guessed.
    pub fn truncated() -> Self {
        Self {
            function: TRUNCATED.to_owned(),
            module: None,
            ..Self::user("", "")
        }
    }
}

/// Function name of the [`Frame::truncated`] marker.
pub const TRUNCATED: &str = "[truncated]";

/// Module name given to kernel frames, as `perf` does.
pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";

/// The file name of a module path (`/usr/lib/libc.so.6` → `libc.so.6`).
pub fn module_basename(module: &str) -> &str {
    module.rsplit('/').next().unwrap_or(module)
}

/// Index of a frame in a [`crate::Profile`]'s frame table.
pub type FrameId = u32;
