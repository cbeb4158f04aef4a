// Cross-entropy rows, one thread per row of contiguous logits [n, c] with i32 targets:
// forward: p = [n, c]; probs = softmax(x), loss[i] = logsumexp(x[i]) − x[i, t_i]
//          (NaN for a target outside 0..c: the GPU does not check targets on the host).
// backward: p = [n, c]; d[i, j] = (probs[i, j] − [j = t_i]) · g[i]
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

@compute @workgroup_size(256)
fn forward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let n = p[0];
    let c = p[1];
    if (i >= n) { return; }
    let row = i * c;
    var mx = x[row];
    for (var j = 1u; j < c; j = j + 1u) {
        mx = max(mx, x[row + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < c; j = j + 1u) {
        let e = exp(x[row + j] - mx);
        probs[row + j] = e;
        sum = sum + e;
    }
    for (var j = 0u; j < c; j = j + 1u) {
        probs[row + j] = probs[row + j] / sum;
    }
    let t = labels[i];
    if (t < 0 || u32(t) >= c) {
        loss[i] = bitcast<f32>(0x7fc00000u);
    } else {
        loss[i] = log(sum) + mx - x[row + u32(t)];
    }
}
