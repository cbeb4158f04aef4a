// The embedding backward's table, step 3 of 3: each position into its row's slots, in position
// order (its rank among the earlier positions reading the same row), so the gradient sums run in
// a fixed order and the result is deterministic. One thread per position; the rank is a scan
// of the earlier positions (quadratic in n, which stays small: a batch of token ids).
// p = [n, rows, pad (i32 bits; −1 for none)]
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read_write> table: array<u32>;

@compute @workgroup_size(256)
fn place_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let n = p[0];
    if (i >= n) { return; }
    let r = idx[i];
    if (r < 0 || u32(r) >= p[1] || r == bitcast<i32>(p[2])) { return; }
    var rank = 0u;
    for (var j = 0u; j < i; j = j + 1u) {
        if (idx[j] == r) { rank = rank + 1u; }
    }
    table[table[n + u32(r)] + rank] = i;
}
