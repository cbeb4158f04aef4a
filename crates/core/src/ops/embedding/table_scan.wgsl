// The embedding backward's table, step 2 of 3: each row's first slot, an exclusive prefix sum
// of the counts, into table[n ..= n + rows] (after the n position slots). One thread: rows
// is at most a vocabulary, a short sequential pass next to the steps around it.
// p = [n, rows]
@group(0) @binding(1) var<storage, read> counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> table: array<u32>;

@compute @workgroup_size(1)
fn scan_main() {
    let n = p[0];
    var at = 0u;
    for (var r = 0u; r < p[1]; r = r + 1u) {
        table[n + r] = at;
        at = at + counts[r];
    }
    table[n + p[1]] = at;
}
