// The optimizer updates, in place, one thread per element, in the same operation order as
// torch.optim's single-tensor loops (and the CPU kernels).
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> s1: array<f32>;

// SGD: p = [n, flags (1: momentum, 2: first step, 4: Nesterov, 8: weight decay), lr, wd, momentum,
// 1 − dampening]; s1 is the momentum buffer (unread without momentum).
@compute @workgroup_size(256)
fn sgd_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let flags = p[1];
    let lr = pf(2u);
    let mom = pf(4u);
    var x = param[i];
    var g = grad[i];
    if ((flags & 8u) != 0u) { g = g + pf(3u) * x; }
    if ((flags & 1u) != 0u) {
        var b = g;
        if ((flags & 2u) == 0u) { b = s1[i] * mom + pf(5u) * g; }
        s1[i] = b;
        if ((flags & 4u) != 0u) { g = g + mom * b; } else { g = b; }
    }
    param[i] = x - lr * g;
}
