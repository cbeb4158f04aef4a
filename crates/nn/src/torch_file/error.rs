//! What can be wrong with a PyTorch file, apart from which file it is (`crate::Error::TorchFile`
//! adds the path). Imports nothing from the crate, so `error.rs` can hold it.

/// Why a `torch.save` file was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    /// The pickle asks for a Python global that is not on the allow-list: loading it would run
    /// or build something other than tensors (`posix.system`, `builtins.eval`, …).
    #[error(
        "refused: the pickle asks for the Python global `{module}.{name}` (data.pkl byte {offset}); strata never runs code from a checkpoint and accepts only the globals that rebuild tensors ({allowed}). \
         If the file is yours, re-save only the tensors: `torch.save(model.state_dict(), path)`, or `safetensors.torch.save_file(model.state_dict(), path)`"
    )]
    RefusedGlobal {
        /// The global's module (`posix`).
        module: String,
        /// Its name (`system`).
        name: String,
        /// Where the GLOBAL or STACK_GLOBAL opcode is, in bytes from the pickle's start.
        offset: usize,
        /// The allow-list, for the message.
        allowed: String,
    },

    /// An opcode this unpickler does not implement: none that `torch.save` writes for a
    /// state_dict, and several (INST, OBJ, EXT*) that would build arbitrary objects.
    #[error(
        "unsupported pickle opcode {name} (0x{opcode:02x}) at data.pkl byte {offset}: strata reads only the opcodes torch.save writes for tensors, dicts, lists, tuples, strings and numbers"
    )]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its name in Python's `pickletools` (`INST`), or `unknown`.
        name: &'static str,
        /// Its position, in bytes from the pickle's start.
        offset: usize,
    },

    /// A pickle that breaks the format's rules (a truncated argument, an empty stack, a memo
    /// index never stored, an argument of the wrong kind).
    #[error("malformed pickle at data.pkl byte {offset}: {what}")]
    Malformed {
        /// Where, in bytes from the pickle's start.
        offset: usize,
        /// What is wrong.
        what: String,
    },

    /// A file in the format of PyTorch before 1.6 (`_use_new_zipfile_serialization=False`).
    #[error(
        "a legacy (pre-1.6, non-zip) torch.save file, which strata does not read; re-save it in the zip format: `torch.save(torch.load(path, weights_only=True), new_path)`"
    )]
    Legacy,

    /// A file that is neither a zip archive nor a pickle.
    #[error(
        "not a torch.save file (no zip archive, no pickle: it starts with {start}); strata reads the zip format torch.save writes by default since PyTorch 1.6"
    )]
    NotTorch {
        /// Its first bytes, as hex.
        start: String,
    },

    /// A bare pickle (no zip archive around it) that unpickled safely but is no checkpoint.
    #[error("a bare pickle, not a torch.save zip archive: it holds {what} and no tensors")]
    BarePickle {
        /// What it holds (`a dict`, `an int`).
        what: String,
    },

    /// A zip archive that cannot be read (damaged, or compressed other than stored/deflate).
    #[error("cannot read the zip archive: {0}")]
    Zip(String),

    /// A zip archive without the records `torch.save` writes.
    #[error("{0}")]
    Archive(String),

    /// Tensors that are not what a state_dict holds, or do not fit their storages.
    #[error("{0}")]
    Content(String),
}
