// Unary maps over a strided operand into a contiguous output: p = [n, op, scalar, layout x].
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// erf, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
    return select(y, -y, v < 0.0);
}

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_KAPPA: f32 = 0.044715;

fn unary_op(op: u32, v: f32, s: f32) -> f32 {
    switch op {
        case 0u: { return -v; }
        case 1u: { return exp(v); }
        case 2u: { return log(v); }
        // NaN propagates, as in PyTorch.
        case 3u: { return select(0.0, v, v > 0.0 || is_nan(v)); }
        case 4u: { return v + s; }
        case 5u: { return v * s; }
        case 6u: { return sigmoid(v); }
        case 7u: { return tanh_safe(v); }
        case 8u: { return sqrt(v); }
        // leaky ReLU with slope s, and its gradient factor (s at 0, as PyTorch)
        case 9u: { return select(s * v, v, v > 0.0); }
        case 10u: { return select(s, 1.0, v > 0.0); }
        // ELU with alpha s, and its gradient factor α·eˣ where x ≤ 0
        case 11u: { return select(s * (exp(v) - 1.0), v, v > 0.0); }
        case 12u: { return select(s * exp(v), 1.0, v > 0.0); }
        // GELU (exact) and its derivative Φ(x) + x·φ(x)
        case 13u: { return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476)); }
        case 14u: { return 0.5 * (1.0 + erf_approx(v * 0.7071067811865476)) + v * exp(-0.5 * v * v) * 0.3989422804014327; }
        // GELU (tanh) and its derivative
        case 15u: { return 0.5 * v * (1.0 + tanh_safe(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v))); }
        case 16u: {
            let t = tanh_safe(SQRT_2_OVER_PI * (v + GELU_KAPPA * v * v * v));
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * v * v);
        }
        // SiLU x·σ(x) and its derivative σ(x)·(1 + x·(1 − σ(x)))
        case 17u: { return v / (1.0 + exp(-v)); }
        case 18u: {
            let sg = 1.0 / (1.0 + exp(-v));
            return sg * (1.0 + v * (1.0 - sg));
        }
        // Mish x·tanh(softplus(x)) and its derivative; softplus is x itself past 20 (exp overflows)
        case 19u: { return v * tanh_safe(select(log(1.0 + exp(v)), v, v > 20.0)); }
        case 20u: {
            let t = tanh_safe(select(log(1.0 + exp(v)), v, v > 20.0));
            let sg = 1.0 / (1.0 + exp(-v));
            return t + v * sg * (1.0 - t * t);
        }
        // Hardswish x·clamp(x + 3, 0, 6)/6 and its derivative (x/3 + ½ on [−3, 3])
        case 21u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 22u: {
            // NaN takes the "above 3" branch, as PyTorch's (and the CPU's) comparisons do.
            if (is_nan(v)) { return 1.0; }
            return select(select(v / 3.0 + 0.5, 1.0, v > 3.0), 0.0, v < -3.0);
        }
        // Hardsigmoid clamp(x + 3, 0, 6)/6 (NaN kept: WGSL's clamp may drop it) and its derivative (1/6 strictly inside (−3, 3))
        case 23u: { return select(clamp(v + 3.0, 0.0, 6.0) / 6.0, v, is_nan(v)); }
        case 24u: { return select(0.0, 1.0 / 6.0, v > -3.0 && v < 3.0); }
        // ReLU6 clamp(x, 0, 6) (NaN kept) and its derivative (1 strictly inside (0, 6))
        case 25u: { return select(clamp(v, 0.0, 6.0), v, is_nan(v)); }
        case 26u: { return select(0.0, 1.0, v > 0.0 && v < 6.0); }
        default: { return v; }
    }
}

@compute @workgroup_size(256)
fn unary_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    out[i] = unary_op(p[1], x[strided(i, 3u)], pf(2u));
}
