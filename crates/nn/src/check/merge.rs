//! The shape rules of the containers that merge two paths — `Add`, `Concat` and `Residual` —
//! with their fixes (projections, pools, flattening, resizing the layer that ends a branch).

use super::context::{embedding_dim_fix, hidden_fix};
use super::error::{BranchOutput, LayerRef, Producer, ShapeErrorKind};
use super::fix::{Edit, Fix, joined};
use super::shape::{Dim, SymShape, fixed, pair_arg};
use crate::spec::{BatchNormSpec, ConvSpec, LayerSpec, Merge, NamedLayer};
use strata_core::DType;

/// A merge's output shape (as if fixed), its error, and the sizes a Concat joined (`64 + 32`).
pub(crate) type Merged = (SymShape, Option<(ShapeErrorKind, Vec<Fix>)>, Option<String>);

/// What a branch of an `Add` or `Concat` ends with.
pub(crate) struct BranchEnd {
    pub(crate) out: BranchOutput,
    pub(crate) producer: Producer,
    pub(crate) dtype: DType,
}

/// The smallest stride `s` with which a 1×1 convolution maps a size `i` to `o` (`(i − 1) / s + 1
/// = o`), if one does. Computed, not searched: a damaged model file can make `i` billions (the
/// search over 1..=i took seconds, and longer without bound).
fn stride(i: usize, o: usize) -> Option<usize> {
    let n = i.max(1) - 1;
    let q = o.checked_sub(1)?;
    // ⌊n / s⌋ falls as s grows: the first s with ⌊n / s⌋ ≤ q is ⌊n / o⌋ + 1.
    let s = n / o + 1;
    (n / s == q).then_some(s)
}

/// The ResNet projection shortcut — `Conv2d(C, O, 1, stride s, bias=False)` + `BatchNorm2d(O)` —
/// that maps an image batch `x` to the body's output `y`, when a stride does.
pub(crate) fn conv_shortcut_fix(path: &str, x: &SymShape, y: &SymShape) -> Option<Fix> {
    let (c, o) = (fixed(x, 1), fixed(y, 1));
    let s = (stride(fixed(x, 2), fixed(y, 2))?, stride(fixed(x, 3), fixed(y, 3))?);
    let mut conv = ConvSpec::new(Some(c), o, (1, 1));
    (conv.stride, conv.bias) = (s, false);
    let layers = vec![
        NamedLayer {
            name: "conv".into(),
            spec: LayerSpec::Conv2d(conv),
            origin: None,
            device: None,
            init: Default::default(),
        },
        NamedLayer {
            name: "bn".into(),
            spec: LayerSpec::BatchNorm2d(BatchNormSpec::new(Some(o))),
            origin: None,
            device: None,
            init: Default::default(),
        },
    ];
    Some(Fix {
        text: format!(
            "add a projection shortcut Conv2d({c}, {o}, 1, stride={}, bias=False) + BatchNorm2d({o}) to {path}",
            pair_arg(s)
        ),
        edits: vec![Edit::SetShortcutLayers { path: path.into(), layers }],
    })
}

/// A layer that maps a branch's output `from` to `to`: a Linear on the last dimension when only
/// it differs, or for image batches a 1×1 Conv2d with the stride that shrinks `from`'s height
/// and width to `to`'s. With its text, e.g. `Linear(64, 128)`.
fn projection(from: &SymShape, to: &SymShape) -> Option<(String, LayerSpec)> {
    let r = from.rank();
    if r != to.rank() || from.0[0] != to.0[0] {
        return None;
    }
    if r == 4 {
        let (c, o) = (fixed(from, 1), fixed(to, 1));
        let s = (stride(fixed(from, 2), fixed(to, 2))?, stride(fixed(from, 3), fixed(to, 3))?);
        let mut conv = ConvSpec::new(Some(c), o, (1, 1));
        conv.stride = s;
        let text = if s == (1, 1) {
            format!("Conv2d({c}, {o}, 1)")
        } else {
            format!("Conv2d({c}, {o}, 1, stride={})", pair_arg(s))
        };
        return Some((text, LayerSpec::Conv2d(conv)));
    }
    if r >= 2 && from.0[..r - 1] == to.0[..r - 1] {
        let (i, o) = (from.last()?, to.last()?);
        let linear = LayerSpec::Linear { in_features: Some(i), out_features: o, bias: true };
        return Some((format!("Linear({i}, {o})"), linear));
    }
    None
}

/// "make the layer that ends branch `end` produce `to`'s size", when that layer is inside the
/// branch (changing a layer before the branches would change every branch).
fn branch_producer_fix(end: &BranchEnd, to: &SymShape) -> Option<Fix> {
    let (from, r) = (&end.out.shape, end.out.shape.rank());
    let inside = |l: &LayerRef| l.path.starts_with(&format!("{}.", end.out.path));
    let all_but = |k: usize| r == to.rank() && (0..r).all(|j| j == k || from.0[j] == to.0[j]);
    let o = to.last()?;
    match &end.producer {
        Producer::Linear(p) if inside(p) && all_but(r - 1) => Some(Fix {
            text: format!("make {} produce {o} features", p.path),
            edits: vec![Edit::SetOutFeatures { path: p.path.clone(), value: o }],
        }),
        Producer::Embedding(p) if inside(p) && all_but(r - 1) => Some(embedding_dim_fix(p, o)),
        Producer::Recurrent(p, d) if inside(p) && all_but(r - 1) => hidden_fix(p, *d, o),
        Producer::Conv2d(p) if inside(p) && r == 4 && all_but(1) => Some(Fix {
            text: format!("make {} produce {} channels", p.path, fixed(to, 1)),
            edits: vec![Edit::SetOutChannels { path: p.path.clone(), value: fixed(to, 1) }],
        }),
        _ => None,
    }
}

/// Every branch's output, for messages.
fn outputs(ends: &[BranchEnd]) -> Vec<BranchOutput> {
    ends.iter().map(|e| e.out.clone()).collect()
}

/// The shape rule of `Add`: every branch the same shape. On a mismatch the target is the
/// largest branch that every other can be projected to (a Linear or a 1×1 convolution appended
/// to it), and the output is that target, as if fixed.
pub(crate) fn merge_add(ends: &[BranchEnd]) -> Merged {
    let first = &ends[0].out.shape;
    if ends.iter().all(|e| e.out.shape == *first) {
        return (first.clone(), None, None);
    }
    let mut order: Vec<usize> = (0..ends.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ends[i].out.shape.sample_numel()));
    let projections = |t: usize| -> Option<Vec<Fix>> {
        let to = &ends[t].out.shape;
        ends.iter()
            .filter(|e| e.out.shape != *to)
            .map(|e| {
                let (text, spec) = projection(&e.out.shape, to)?;
                Some(Fix {
                    text: format!("append a projection {text} to {}", e.out.path),
                    edits: vec![Edit::Append { chain: e.out.path.clone(), name: "proj".into(), spec }],
                })
            })
            .collect()
    };
    let target = order.iter().copied().find(|&t| projections(t).is_some()).unwrap_or(order[0]);
    let to = ends[target].out.shape.clone();
    let mut fixes = vec![];
    fixes.extend(projections(target).map(joined));
    let resize: Option<Vec<Fix>> =
        ends.iter().filter(|e| e.out.shape != to).map(|e| branch_producer_fix(e, &to)).collect();
    fixes.extend(resize.map(joined));
    let kind = ShapeErrorKind::BranchMismatch { merge: Merge::Add, branches: outputs(ends) };
    (to, Some((kind, fixes)), None)
}

/// The shape rule of `Concat`: the same rank, equal sizes but along `dim` (never the batch),
/// which are added. Also returns the sizes joined (`64 + 32`) when `dim` is the last dimension.
pub(crate) fn merge_concat(path: &str, dim: isize, ends: &[BranchEnd]) -> Merged {
    let shapes: Vec<&SymShape> = ends.iter().map(|e| &e.out.shape).collect();
    let mismatch = |fixes: Vec<Fix>| {
        Some((ShapeErrorKind::BranchMismatch { merge: Merge::Concat { dim }, branches: outputs(ends) }, fixes))
    };
    let resolve = |rank: usize| {
        let d = if dim < 0 { dim + rank as isize } else { dim };
        (0..rank as isize).contains(&d).then_some(d as usize)
    };
    let (min_rank, max_rank) =
        (shapes.iter().map(|s| s.rank()).min().unwrap_or(0), shapes.iter().map(|s| s.rank()).max().unwrap_or(0));
    if min_rank != max_rank {
        // Feature vectors beside image-shaped branches: flatten those (along the features only).
        if min_rank == 2 && resolve(2) == Some(1) && shapes.iter().all(|s| s.sample().is_some()) {
            let mut fixes = vec![];
            for e in ends.iter().filter(|e| e.out.shape.rank() > 2) {
                fixes.push(Fix {
                    text: format!(
                        "append Flatten to {} (it turns {} into [N, {}])",
                        e.out.path,
                        e.out.shape,
                        e.out.shape.sample_numel()
                    ),
                    edits: vec![Edit::Append {
                        chain: e.out.path.clone(),
                        name: "flatten".into(),
                        spec: LayerSpec::Flatten { start_dim: 1, end_dim: -1 },
                    }],
                });
            }
            let total = shapes.iter().map(|s| s.sample_numel()).sum();
            return (SymShape(vec![shapes[0].0[0], Dim::Fixed(total)]), mismatch(vec![joined(fixes)]), None);
        }
        return (shapes[0].clone(), mismatch(vec![]), None);
    }
    let r = min_rank;
    let batch_at = |k: usize| shapes.iter().any(|s| s.0[k] == Dim::Batch);
    let mut dim_error = None;
    let d = match resolve(r) {
        Some(d) if !batch_at(d) => d,
        bad => {
            let Some(good) = (1..r).find(|&k| !batch_at(k)) else {
                let reason = format!("the branches produce {}: there is no dimension besides N to join", shapes[0]);
                return (shapes[0].clone(), Some((ShapeErrorKind::BadLayer { reason }, vec![])), None);
            };
            let reason = match bad {
                None => format!(
                    "dim = {dim} is not a dimension of the branches' {r}-dimensional outputs (valid: {} to {})",
                    -(r as isize),
                    r - 1
                ),
                Some(_) => format!(
                    "dim = {dim} is the batch dimension N: joining along it would stack the branches' batches into one of {}·N samples",
                    ends.len()
                ),
            };
            let what = if r == 4 && good == 1 { "the channels" } else { "the features" };
            let fix = Fix {
                text: format!("make {path} Concat(dim={good}) (join {what})"),
                edits: vec![Edit::SetConcatDim { path: path.into(), dim: good as isize }],
            };
            dim_error = Some((ShapeErrorKind::BadLayer { reason }, vec![fix]));
            good
        }
    };
    let agree = shapes.iter().all(|s| (0..r).all(|k| k == d || s.0[k] == shapes[0].0[k]));
    let total: usize = shapes.iter().map(|s| fixed(s, d)).sum();
    if !agree && dim_error.is_none() {
        // Images joined along their channels: pool the larger ones down to the smallest size.
        if r == 4 && d == 1 && shapes.iter().all(|s| s.0[0] == shapes[0].0[0]) {
            let th = shapes.iter().map(|s| fixed(s, 2)).min().unwrap_or(1);
            let tw = shapes.iter().map(|s| fixed(s, 3)).min().unwrap_or(1);
            let mut fixes = vec![];
            for e in ends {
                let (h, w) = (fixed(&e.out.shape, 2), fixed(&e.out.shape, 3));
                if (h, w) == (th, tw) || th == 0 || tw == 0 {
                    continue;
                }
                let (text, spec) = if h.is_multiple_of(th) && w.is_multiple_of(tw) && h / th == w / tw {
                    let k = h / th;
                    let pool = LayerSpec::MaxPool2d(strata_core::MaxPool2dOptions::new((k, k)));
                    (format!("MaxPool2d({k})"), pool)
                } else {
                    let pool = LayerSpec::AdaptiveAvgPool2d { output_size: (th, tw) };
                    (format!("AdaptiveAvgPool2d({})", pair_arg((th, tw))), pool)
                };
                let mut to = e.out.shape.clone();
                (to.0[2], to.0[3]) = (Dim::Fixed(th), Dim::Fixed(tw));
                fixes.push(Fix {
                    text: format!("append {text} to {} (it turns {} into {to})", e.out.path, e.out.shape),
                    edits: vec![Edit::Append { chain: e.out.path.clone(), name: "pool".into(), spec }],
                });
            }
            let out = SymShape(vec![shapes[0].0[0], Dim::Fixed(total), Dim::Fixed(th), Dim::Fixed(tw)]);
            return (out, mismatch(vec![joined(fixes)]), None);
        }
        let mut out = shapes[0].clone();
        out.0[d] = Dim::Fixed(total);
        return (out, mismatch(vec![]), None);
    }
    let mut out = shapes[0].clone();
    out.0[d] = Dim::Fixed(total);
    let parts = (d + 1 == r && dim_error.is_none())
        .then(|| shapes.iter().map(|s| fixed(s, d).to_string()).collect::<Vec<_>>().join(" + "));
    (out, dim_error, parts)
}

#[cfg(test)]
mod tests {
    /// The computed stride is the one the search over `1..=i` found, and sizes of billions take
    /// no time (a Residual after a padding of 2^31 took 7 s in a release build).
    #[test]
    fn stride_is_the_smallest_that_maps_i_to_o() {
        let search = |i: usize, o: usize| (1..=i.max(1)).find(|s| (i.max(1) - 1) / s + 1 == o);
        for i in 0..200 {
            for o in 0..60 {
                assert_eq!(super::stride(i, o), search(i, o), "{i} → {o}");
            }
        }
        assert_eq!(super::stride(4_294_967_322, 2_147_483_663), None);
        assert_eq!(super::stride(4_000_000_001, 2_000_000_001), Some(2));
        assert_eq!(super::stride(usize::MAX, 1), Some(usize::MAX));
        assert_eq!(super::stride(usize::MAX, 0), None);
    }
}
