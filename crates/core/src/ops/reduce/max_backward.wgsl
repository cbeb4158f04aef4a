// max's backward: one thread per element of the contiguous input gradient dx, viewed as
// [outer, D, inner] around the reduced dimension; dx = g[o] where the forward chose this
// element (index[o] = j), else 0, with o = a·inner + b the output position.
// p = [numel, D, inner]
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> index: array<i32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn max_backward_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let d = p[1];
    let inner = p[2];
    let b = i % inner;
    let j = (i / inner) % d;
    let a = i / (inner * d);
    let o = a * inner + b;
    dx[i] = select(0.0, g[o], index[o] == i32(j));
}
