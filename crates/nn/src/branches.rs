//! Parallel branches merged into one tensor: every branch (a chain of layers, empty for the
//! identity) is applied to the same input, and the outputs are summed (Keras' `Add`) or
//! concatenated along a dimension (Keras' `Concatenate`, `torch.cat`). Inception blocks,
//! multi-width MLPs and dense skip connections are written with it; `Residual` is the special
//! case body + identity.

use crate::module::Module;
use crate::spec::{LayerSpec, NamedLayer};
use crate::{Error, Result, Sequential};
use strata_core::Tensor;

pub use crate::spec::Merge;

/// N ≥ 2 branches applied to the same input and merged. Parameters are named
/// `branches.0.…`, `branches.1.…` (what a PyTorch module holding an `nn.ModuleList` of
/// `nn.Sequential`s called `branches` gives).
///
/// # Shapes
/// - input: `[N, *]`, whatever every branch accepts
/// - `Add` output: the branches' common shape
/// - `Concat { dim }` output: the branches' common shape with the sizes along `dim` summed,
///   e.g. `[N, 64]` and `[N, 32]` → `[N, 96]`, or `[N, 16, H, W]` and `[N, 8, H, W]` →
///   `[N, 24, H, W]`
///
/// ```
/// use strata_nn::{Branches, Linear, Module, Sequential};
/// use strata_core::{DType, Tensor};
/// let wide = Sequential::new().add_module("fc", Linear::new(8, 6)?)?;
/// let narrow = Sequential::new().add_module("fc", Linear::new(8, 2)?)?;
/// let both = Branches::concat(vec![wide, narrow, Sequential::new()], 1)?; // the last is the identity
/// assert_eq!(both.forward(&Tensor::ones(&[4, 8], DType::F32))?.dims(), &[4, 16]);
/// let names: Vec<String> = both.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["branches.0.fc.weight", "branches.0.fc.bias", "branches.1.fc.weight", "branches.1.fc.bias"]);
/// # Ok::<(), strata_nn::Error>(())
/// ```
pub struct Branches {
    branches: Vec<Sequential>,
    merge: Merge,
}

impl Branches {
    /// Branches merged by `merge`; at least two are needed.
    pub fn new(branches: Vec<Sequential>, merge: Merge) -> Result<Branches> {
        if branches.len() < 2 {
            let expected = "at least 2 (a single chain is a Sequential)";
            return Err(Error::option(merge.type_name(), "branches", branches.len(), expected));
        }
        Ok(Branches { branches, merge })
    }

    /// The element-wise sum of the branches' outputs.
    pub fn add(branches: Vec<Sequential>) -> Result<Branches> {
        Branches::new(branches, Merge::Add)
    }

    /// The branches' outputs concatenated along `dim` (1 for features or channels).
    pub fn concat(branches: Vec<Sequential>, dim: isize) -> Result<Branches> {
        Branches::new(branches, Merge::Concat { dim })
    }

    /// How the outputs are merged.
    pub fn merge(&self) -> Merge {
        self.merge
    }

    /// The branches, in order.
    pub fn branches(&self) -> &[Sequential] {
        &self.branches
    }
}

/// `[2, 64] (branch 0) and [2, 32] (branch 1)`, for run-time errors.
fn outputs(ys: &[Tensor]) -> Vec<(String, strata_core::Shape)> {
    ys.iter().enumerate().map(|(i, y)| (format!("branch {i}"), y.shape().clone())).collect()
}

impl Module for Branches {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ys = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| b.forward(x).map_err(|e| e.in_layer(&format!("branches.{i}"), || "Sequential".into())))
            .collect::<Result<Vec<Tensor>>>()?;
        match self.merge {
            Merge::Add => {
                // Equal shapes, not merely broadcastable: a [N, 1] branch must not silently spread.
                if ys.iter().any(|y| y.shape() != ys[0].shape()) {
                    return Err(Error::BranchShapes {
                        merge: "add",
                        outputs: outputs(&ys),
                        need: "they must have the same shape to be added".into(),
                    });
                }
                let mut sum = ys[0].add(&ys[1])?;
                for y in &ys[2..] {
                    sum = sum.add(y)?;
                }
                Ok(sum)
            }
            Merge::Concat { dim } => {
                let rank = ys[0].ndim() as isize;
                let d = if dim < 0 { dim + rank } else { dim };
                let fits = |y: &Tensor| {
                    y.ndim() == ys[0].ndim()
                        && y.dims().iter().zip(ys[0].dims()).enumerate().all(|(k, (a, b))| k as isize == d || a == b)
                };
                if d < 0 || d >= rank || !ys.iter().all(fits) {
                    return Err(Error::BranchShapes {
                        merge: "concat",
                        outputs: outputs(&ys),
                        need: format!(
                            "to be concatenated along dim {dim} they must have the same rank and agree in every other dimension"
                        ),
                    });
                }
                let refs: Vec<&Tensor> = ys.iter().collect();
                Ok(strata_core::cat(&refs, dim)?)
            }
        }
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.branches.iter().enumerate().map(|(i, b)| (format!("branches.{i}"), b as &dyn Module)).collect()
    }
    fn describe(&self) -> String {
        self.merge.type_name().into()
    }
    fn spec(&self) -> Option<LayerSpec> {
        let layers = |s: &Sequential| -> Option<Vec<NamedLayer>> {
            match s.spec()? {
                LayerSpec::Sequential(l) => Some(l),
                _ => None,
            }
        };
        Some(LayerSpec::Branches {
            branches: self.branches.iter().map(layers).collect::<Option<Vec<_>>>()?,
            merge: self.merge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Linear, ReLU};
    use strata_core::testing::{gradcheck, randn64};
    use strata_core::{DType, Generator};

    fn lin(i: usize, o: usize, rng: &mut Generator) -> Linear {
        Linear::with_options(i, o, true, DType::F64, rng).unwrap()
    }

    #[test]
    fn add_and_concat_are_torch_add_and_torch_cat() {
        let mut rng = Generator::new(5);
        let (a, b) = (lin(4, 3, &mut rng), lin(4, 3, &mut rng));
        let x = randn64(&[2, 4], &mut rng);
        // torch: a(x) + b(x) + x would need equal widths; here a(x) + relu(b(x)).
        let expected: Vec<f64> =
            a.forward(&x).unwrap().add(&b.forward(&x).unwrap().relu().unwrap()).unwrap().to_vec_f64();
        let (wa, wb) = (a.weight.detach(), b.weight.detach());
        let (ba, bb) = (a.bias.clone().unwrap().detach(), b.bias.clone().unwrap().detach());
        let add = Branches::add(vec![
            Sequential::new().add_module("fc", a).unwrap(),
            Sequential::new().add_module("fc", b).unwrap().append(ReLU).unwrap(),
        ])
        .unwrap();
        assert_eq!(add.forward(&x).unwrap().to_vec_f64(), expected);
        // torch.cat([fc(x), x], dim=1): an identity branch.
        let c = lin(4, 2, &mut rng);
        let fc_x = c.forward(&x).unwrap();
        let cat = Branches::concat(vec![Sequential::new().add_module("fc", c).unwrap(), Sequential::new()], 1).unwrap();
        let y = cat.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 6]);
        let (yv, fv, xv) = (y.to_vec_f64(), fc_x.to_vec_f64(), x.to_vec_f64());
        for n in 0..2 {
            assert_eq!(&yv[n * 6..n * 6 + 2], &fv[n * 2..n * 2 + 2]);
            assert_eq!(&yv[n * 6 + 2..n * 6 + 6], &xv[n * 4..n * 4 + 4]);
        }
        let names: Vec<String> = add.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["branches.0.fc.weight", "branches.0.fc.bias", "branches.1.fc.weight", "branches.1.fc.bias"]);
        assert_eq!(add.spec().unwrap().type_name(), "Add");
        // The gradient of the input flows through every branch (the identity included), and
        // each branch's parameters get theirs.
        gradcheck(&[x.clone(), wa, ba, wb, bb], |t| {
            let p = strata_core::linear(&t[0], &t[1], Some(&t[2]))?;
            let q = strata_core::linear(&t[0], &t[3], Some(&t[4]))?.relu()?;
            let s = p.add(&q)?;
            strata_core::cat(&[&s, &t[0]], 1)
        });
    }

    #[test]
    fn gradients_reach_the_input_through_every_branch() {
        let mut rng = Generator::new(6);
        let x = randn64(&[3, 4], &mut rng).requires_grad_().unwrap();
        let m = Branches::concat(
            vec![
                Sequential::new().add_module("fc", lin(4, 2, &mut rng)).unwrap(),
                Sequential::new(),
                Sequential::new().add_module("fc", lin(4, 3, &mut rng)).unwrap().append(ReLU).unwrap(),
            ],
            -1,
        )
        .unwrap();
        let y = m.forward(&x).unwrap();
        assert_eq!(y.dims(), &[3, 9]);
        y.sum_all().unwrap().backward().unwrap();
        // d/dx Σ y = Σ_o W0[o, :] + 1 + Σ_o relu'(.)·W2[o, :], checked against finite differences.
        let analytic = x.grad().unwrap().to_vec_f64();
        let numeric: Vec<f64> = (0..12)
            .map(|i| {
                let probe = |d: f64| {
                    let mut v = x.to_vec_f64();
                    v[i] += d;
                    let xi = Tensor::from_vec(v, &[3, 4]).unwrap();
                    strata_core::no_grad(|| m.forward(&xi).unwrap().sum_all().unwrap().item().unwrap())
                };
                (probe(1e-6) - probe(-1e-6)) / 2e-6
            })
            .collect();
        strata_core::testing::assert_close(&analytic, &numeric, 1e-6, 1e-7);
        for (name, p) in m.named_parameters() {
            assert!(p.grad().is_some(), "{name} has no gradient");
        }
    }

    #[test]
    fn every_container_passes_the_gradient_check_at_batch_one_and_two() {
        // The fault class: a value used twice whose gradients arrive as views (cat's backward
        // narrows the output gradient; on a batch of one the slices are contiguous yet share a
        // buffer). Each container with identity paths, built in f64 from a spec, checked against
        // finite differences of the input.
        use crate::spec::ModelSpec;
        let id = || ModelSpec::new("identity");
        let fc = |o: usize| ModelSpec::new("b").linear("fc", 4, o);
        let containers = [
            ("Concat identity+identity", ModelSpec::new("m").concat_branches("cat", vec![id(), id()], 1)),
            ("Concat identity+Linear", ModelSpec::new("m").concat_branches("cat", vec![id(), fc(3)], -1)),
            ("Add identity+identity", ModelSpec::new("m").add_branches("add", vec![id(), id()])),
            ("Add identity+Linear", ModelSpec::new("m").add_branches("add", vec![fc(4), id()])),
            ("Residual", ModelSpec::new("m").residual("res", fc(4).relu())),
            (
                "nested",
                ModelSpec::new("m")
                    .residual("res", ModelSpec::new("in").concat_branches("c", vec![id(), id()], 1).linear("fc", 8, 4)),
            ),
        ];
        let mut rng = Generator::new(9);
        for (what, spec) in containers {
            let m = spec.lazy_linear("head", 3).dtype(DType::F64);
            for batch in [1, 2] {
                let x = randn64(&[batch, 4], &mut rng);
                let head_in = match m.clone().resolve(Some(&crate::check::SymShape::batched(&[4]))) {
                    Ok(r) => r,
                    Err(e) => panic!("{what}: {}", e.render_errors()),
                };
                let model = head_in.build().unwrap();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    gradcheck(std::slice::from_ref(&x), |t| Ok(model.forward(&t[0]).expect("forward")))
                }));
                assert!(r.is_ok(), "{what} at batch {batch}: gradient check failed");
            }
        }
    }

    #[test]
    fn mismatches_and_too_few_branches_are_errors() {
        let mut rng = Generator::new(7);
        let x = randn64(&[2, 4], &mut rng);
        let add =
            Branches::add(vec![Sequential::new().add_module("fc", lin(4, 3, &mut rng)).unwrap(), Sequential::new()])
                .unwrap();
        assert_eq!(
            add.forward(&x).unwrap_err().to_string(),
            "add: the branches produce [2, 3] (branch 0) and [2, 4] (branch 1); they must have the same shape to be added"
        );
        let cat = Branches::concat(vec![Sequential::new(), Sequential::new()], 2).unwrap();
        assert!(cat.forward(&x).unwrap_err().to_string().contains("to be concatenated along dim 2"));
        let e = Branches::add(vec![Sequential::new()]).err().unwrap().to_string();
        assert_eq!(e, "Add: branches must be at least 2 (a single chain is a Sequential), got 1");
        // Errors inside a branch name it by path.
        let inner =
            Branches::add(vec![Sequential::new().add_module("fc", lin(5, 4, &mut rng)).unwrap(), Sequential::new()])
                .unwrap();
        let e = inner.forward(&x).unwrap_err().to_string();
        assert!(e.starts_with("in layer `branches.0.fc`"), "{e}");
    }
}
