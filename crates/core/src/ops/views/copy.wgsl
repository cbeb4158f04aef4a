// Copies, fills and type conversions over 32-bit words (f32, or i32 holding i64 class indices):
// bit copies, so integer words never pass through float registers.
// copy:    p = [n, layout x]            out[i] = x[strided(i)]
// fill:    p = [n, word]                out[i] = word
// convert: p = [n, to_int, layout x]    f32 → i32 (truncating, as `as i64`) or i32 → f32
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn copy_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    out[i] = x[strided(i, 1u)];
}

@compute @workgroup_size(256)
fn convert_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let v = x[strided(i, 2u)];
    if (p[1] == 1u) {
        out[i] = bitcast<u32>(i32(bitcast<f32>(v)));
    } else {
        out[i] = bitcast<u32>(f32(bitcast<i32>(v)));
    }
}

// scatter: p = [n, layout dst]    out[strided(i)] = x[i] (x contiguous): writes a region of out.
@compute @workgroup_size(256)
fn scatter_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    out[strided(i, 1u)] = x[i];
}
