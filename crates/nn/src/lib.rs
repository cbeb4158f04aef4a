//! strata-nn: modules, losses, optimizers, state_dicts.
