// Adam / AdamW, in place: p = [n, decay (0 none, 1 L2, 2 decoupled), amsgrad, step_size,
// bc2_sqrt, 1 − β1, β2, 1 − β2, eps, wd, 1 − lr·wd]; m, v the moments, vmax AMSGrad's maximum
// (unread without AMSGrad).
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> vmax: array<f32>;

@compute @workgroup_size(256)
fn adam_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    var x = param[i];
    var g = grad[i];
    if (p[1] == 1u) { g = g + pf(9u) * x; }
    if (p[1] == 2u) { x = x * pf(10u); }
    let mi = m[i] + pf(5u) * (g - m[i]);
    let vi = v[i] * pf(6u) + pf(7u) * g * g;
    m[i] = mi;
    v[i] = vi;
    var vd = vi;
    if (p[2] == 1u) {
        let vm = select(max(vmax[i], vi), vmax[i] + vi, is_nan(vi) || is_nan(vmax[i]));
        vmax[i] = vm;
        vd = vm;
    }
    let denom = sqrt(vd) / pf(4u) + pf(8u);
    param[i] = x - pf(3u) * (mi / denom);
}
