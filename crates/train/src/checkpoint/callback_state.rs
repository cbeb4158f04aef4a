//! What a callback keeps across a resume ([`CallbackState`]): its counters as text in the
//! checkpoint's metadata (`strata.callbacks`, a JSON table by the callback's key) and its tensors
//! (early stopping's best weights) beside the parameters under the reserved prefix
//! [`CALLBACK_PREFIX`]`<key>.`.

use strata_nn::StateDict;

/// Prefix of the callbacks' tensors in a checkpoint: `__strata__.callback.<key>.<name>`.
pub const CALLBACK_PREFIX: &str = "__strata__.callback.";

/// One callback's state, as [`crate::Callback::state`] gives it and
/// [`crate::Callback::load_state`] takes it back.
#[derive(Clone, Debug, Default)]
pub struct CallbackState {
    /// Its counters and settings, as text (early stopping's is JSON).
    pub value: String,
    /// Its tensors, by name (empty for most callbacks).
    pub tensors: StateDict,
}

impl PartialEq for CallbackState {
    /// The same text and the same tensors: names, shapes and values.
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &StateDict, b: &StateDict| {
            a.len() == b.len()
                && a.iter().zip(b.iter()).all(|((ka, ta), (kb, tb))| {
                    ka == kb && ta.shape() == tb.shape() && ta.to_vec_f64() == tb.to_vec_f64()
                })
        };
        self.value == other.value && same(&self.tensors, &other.tensors)
    }
}
