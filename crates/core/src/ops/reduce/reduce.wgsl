// Reductions over the innermost `reduced` visits of a plan layout (kept dimensions outermost,
// reduced ones innermost): output o reduces plan elements o·reduced … o·reduced + reduced − 1.
// p = [n_out, reduced, plan layout (at 2)], and for sum_group its slicing [S, chunk] after it
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

// One thread per output: for short reductions.
@compute @workgroup_size(256)
fn sum_thread(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = flat_index(gid, nwg);
    if (o >= p[0]) { return; }
    let r = p[1];
    var acc = 0.0;
    for (var k = 0u; k < r; k = k + 1u) {
        acc = acc + x[strided(o * r + k, 2u)];
    }
    out[o] = acc;
}

// Workgroups striding over slices of the reduction and summing as a tree: S per output,
// workgroup o·S + s summing its output's elements [s·chunk, (s+1)·chunk) into out[o·S + s].
// With S = 1 and chunk = reduced, one workgroup per output. With S > 1 a second pass (over the
// contiguous [n_out, S]) adds the slices. Why: one workgroup per output left BatchNorm's
// per-channel sums (16–64 outputs of 100k elements at batch 128) on 16–64 workgroups.
// p = [n_out, reduced, plan layout (at 2), S, chunk].
@compute @workgroup_size(256)
fn sum_group(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = 4u + 2u * p[2];
    let S = p[e];
    let chunk = p[e + 1u];
    let o2 = wid.x + wid.y * nwg.x;
    let o = o2 / S;
    let r = p[1];
    let end = min(r, (o2 % S + 1u) * chunk);
    var acc = 0.0;
    if (o < p[0]) {
        for (var k = (o2 % S) * chunk + lid; k < end; k = k + WG) {
            acc = acc + x[strided(o * r + k, 2u)];
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] = partial[lid] + partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && o < p[0]) {
        out[o2] = partial[0];
    }
}
