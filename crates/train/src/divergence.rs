//! Where a diverged step first went non-finite: the input, a parameter, the first layer (in
//! forward order) whose output did, the loss, or the first gradient backward reached.

use crate::error::Result;
use strata_core::Tensor;
use strata_nn::Module;

/// Where a diverged step first went non-finite, in words: the input, a parameter, the first
/// layer (in forward order) whose output did, the loss, or the first gradient backward reached.
pub fn diagnose(model: &dyn Module, input: &Tensor, target: &Tensor, loss: f64) -> String {
    /// The first layer under `m` (a Sequential) whose output is non-finite for input `x`: its path
    /// and description, descending into nested Sequential blocks; or `None` and the output.
    fn first_bad(prefix: &str, m: &dyn Module, x: &Tensor) -> Result<std::result::Result<Tensor, String>> {
        let mut h = x.clone();
        for (name, child) in m.children() {
            let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            let y = child.forward(&h)?;
            if !y.all_finite() {
                if matches!(child.spec(), Some(strata_nn::LayerSpec::Sequential(_)))
                    && let Err(inner) = first_bad(&path, child, &h)?
                {
                    return Ok(Err(inner));
                }
                return Ok(Err(format!("the output of layer `{path}` ({}), from a finite input", child.describe())));
            }
            h = y;
        }
        Ok(Ok(h))
    }
    let _no_grad = strata_core::NoGradGuard::new();
    let mut found = vec![];
    let bad_params: Vec<String> =
        model.named_parameters().into_iter().filter(|(_, p)| !p.all_finite()).map(|(n, _)| n).collect();
    if !bad_params.is_empty() {
        found.push(format!(
            "parameters already non-finite (the previous update made them so): {}",
            bad_params.join(", ")
        ));
    }
    if !input.all_finite() {
        found.push("the input batch holds non-finite values: check the data and its normalisation".into());
    } else {
        // Layer by layer for a Sequential (its children are its data flow); a custom module's
        // children need not be, so it is re-run whole.
        let walked = if matches!(model.spec(), Some(strata_nn::LayerSpec::Sequential(_))) {
            first_bad("", model, input)
        } else {
            model
                .forward(input)
                .map(
                    |y| if y.all_finite() { Ok(y) } else { Err("the model's output, from a finite input".to_string()) },
                )
                .map_err(crate::Error::from)
        };
        match walked {
            Ok(Err(where_)) => found.push(where_),
            Ok(Ok(logits)) if !loss.is_finite() => {
                let top = logits.to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let targets_ok = target.to_vec_f64().iter().all(|v| v.is_finite());
                found.push(format!(
                    "the loss: the logits are finite (largest magnitude {top:.3e}) but the loss is {loss}{}",
                    if targets_ok { "" } else { " (the targets hold non-finite values)" }
                ));
            }
            Ok(Ok(_)) => {}
            Err(e) => found.push(format!("(re-running the forward pass layer by layer failed: {e})")),
        }
    }
    if found.is_empty() || loss.is_finite() {
        // Backward reaches the last layers first: the last parameter in forward order with a
        // non-finite gradient is where the gradient first went non-finite.
        let bad_grads: Vec<String> = model
            .named_parameters()
            .into_iter()
            .filter(|(_, p)| p.grad().is_some_and(|g| !g.all_finite()))
            .map(|(n, _)| n)
            .collect();
        if let Some(last) = bad_grads.last() {
            found.push(format!(
                "the gradient, first at `{last}` (backward reaches it first; {} parameter gradient{} non-finite)",
                bad_grads.len(),
                if bad_grads.len() == 1 { " is" } else { "s are" }
            ));
        }
    }
    if found.is_empty() {
        found.push("the parameters after the update".into());
    }
    found.join("\n  first non-finite: ")
}
