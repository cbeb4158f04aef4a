// Weighted, smoothed NLL rows' backward (`weighted.wgsl` is the forward): p as there; one thread
// per element of [n, c]; g is each row's upstream gradient, lp and wt the forward's outputs.
// d[i, k] = g[i]·((1 − ε)·w[t]·(p_ik − [k = t]) + ε/C·(W·p_ik − w[k])) for logits
// (p = softmax = exp(lp), W = Σ_k w[k] = wt[n + i]), and −g[i]·((1 − ε)·w[t]·[k = t] + ε/C·w[k])
// for log-probabilities; 0 on an ignored row.
@group(0) @binding(1) var<storage, read> labels: array<i32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> lp: array<f32>;
@group(0) @binding(4) var<storage, read> wt: array<f32>;
@group(0) @binding(5) var<storage, read> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> d: array<f32>;

fn class_weight(k: u32) -> f32 {
    if ((p[2] & 2u) != 0u) { return weight[k]; }
    return 1.0;
}

@compute @workgroup_size(256)
fn backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg);
    let n = p[0];
    let c = p[1];
    if (e >= n * c) { return; }
    let i = e / c;
    let k = e % c;
    let t = labels[i];
    if ((p[2] & 4u) != 0u && t == bitcast<i32>(p[3])) {
        d[e] = 0.0;
        return;
    }
    let eps = pf(4u);
    let hit = select(0.0, 1.0, i32(k) == t);
    let w_t = wt[i];
    let eps_c = eps / f32(c);
    if ((p[2] & 1u) != 0u) {
        let pk = exp(lp[e]);
        d[e] = g[i] * ((1.0 - eps) * w_t * (pk - hit) + eps_c * (wt[n + i] * pk - class_weight(k)));
    } else {
        d[e] = -g[i] * ((1.0 - eps) * w_t * hit + eps_c * class_weight(k));
    }
}
