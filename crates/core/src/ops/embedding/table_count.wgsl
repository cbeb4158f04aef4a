// The embedding backward's table, step 1 of 3: how many positions read each weight row.
// p = [n, rows, pad (i32 bits; −1 for none)]; one thread per position; counts[rows] zeroed.
// Out-of-range indices (NaN rows in the forward) and padding positions are not counted.
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;

@compute @workgroup_size(256)
fn count_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    let r = idx[i];
    if (r < 0 || u32(r) >= p[1] || r == bitcast<i32>(p[2])) { return; }
    atomicAdd(&counts[u32(r)], 1u);
}
