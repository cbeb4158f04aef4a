// Cross-entropy rows' backward: p = [n, c]; d[i, j] = (probs[i, j] − [j = t_i]) · g[i],
// one thread per element.
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> d: array<f32>;

@compute @workgroup_size(256)
fn backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_index(gid, nwg);
    let c = p[1];
    if (e >= p[0] * c) { return; }
    let i = e / c;
    let j = e % c;
    let onehot = select(0.0, 1.0, i32(j) == labels[i]);
    d[e] = (probs[e] - onehot) * g[i];
}
