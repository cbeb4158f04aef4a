// Elementwise maps over strided (broadcast) operands into a contiguous output.
// binary: p = [n, op, scalar, layout a (at 3), layout b (at 3 + 2 + 2·ndim)]
// unary:  p = [n, op, scalar, layout x (at 3)]
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn binary_op(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        // ReLU's backward: the gradient x where the input y > 0 (PyTorch's threshold_backward).
        default: { return select(0.0, x, y > 0.0); }
    }
}

@compute @workgroup_size(256)
fn binary_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let nd = p[3];
    out[i] = binary_op(p[1], a[strided(i, 3u)], b[strided(i, 3u + 2u + 2u * nd)]);
}
