// Batched matrix product out[z] = A[z] · B[z] (+ bias over columns, then ReLU, by flags), tiled:
// a workgroup computes a 64×64 block of the output from 16-deep slices of A and B staged in
// workgroup memory, each of its 16×16 threads a 4×4 register block. A and B are read through
// their strides, so transposed operands cost nothing.
// p = [M, N, K, a_rs, a_cs, b_rs, b_cs, flags (1: bias, 2: ReLU), S, KC, batch layout of A
//      (at 10), batch layout of B (at 10 + 2 + 2·nbatchdims), the grid's first workgroup
//      (x0, y0, z0) (at 14 + 4·nbatchdims)]; out is contiguous [batch, M, N]. A grid larger than
//      65,535 workgroups in a dimension runs as several dispatches, each from its (x0, y0, z0).
// Split-K (S > 1): the dispatch's z is batch·S, workgroup z·S + s sums k in [s·KC, (s+1)·KC)
// into its own [M, N] slice of out (then [batch·S, M, N]), without the epilogue; splitk.wgsl
// adds the slices and applies it. For products of few tiles and a long K, whose few workgroups
// would otherwise run the whole K loop alone.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> As: array<f32, 1024>; // [TK][TM]
var<workgroup> Bs: array<f32, 1024>; // [TK][TM]

// The workgroup's position in the whole grid: its id in this dispatch plus the dispatch's origin.
fn grid_id(wid: vec3<u32>) -> vec3<u32> {
    let at = 14u + 4u * p[10];
    return wid + vec3<u32>(p[at], p[at + 1u], p[at + 2u]);
}

@compute @workgroup_size(16, 16)
fn matmul_main(@builtin(workgroup_id) local_wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = grid_id(local_wid);
    let M = p[0];
    let N = p[1];
    let K = p[2];
    let S = p[8];
    let z = wid.z / S;
    let k_start = (wid.z % S) * p[9];
    let k_end = min(K, k_start + p[9]);
    let a0 = strided(z, 10u);
    let b0 = strided(z, 10u + 2u + 2u * p[10]);
    let row0 = wid.y * TM;
    let col0 = wid.x * TM;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = k_start; k0 < k_end; k0 = k0 + TK) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let e = t + 256u * j;
            // A's slice: 64 rows × 16 k, k fastest in the read order.
            let r = e / TK;
            let ka = e % TK;
            var va = 0.0;
            if (row0 + r < M && k0 + ka < k_end) {
                va = a[a0 + (row0 + r) * p[3] + (k0 + ka) * p[4]];
            }
            As[ka * TM + r] = va;
            // B's slice: 16 k × 64 columns, columns fastest.
            let kb = e / TM;
            let c = e % TM;
            var vb = 0.0;
            if (k0 + kb < k_end && col0 + c < N) {
                vb = b[b0 + (k0 + kb) * p[5] + (col0 + c) * p[6]];
            }
            Bs[kb * TM + c] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk = kk + 1u) {
            let ar = As[kk * TM + lid.y * 4u];
            let ar1 = As[kk * TM + lid.y * 4u + 1u];
            let ar2 = As[kk * TM + lid.y * 4u + 2u];
            let ar3 = As[kk * TM + lid.y * 4u + 3u];
            let av = array<f32, 4>(ar, ar1, ar2, ar3);
            for (var jj = 0u; jj < 4u; jj = jj + 1u) {
                let bv = Bs[kk * TM + lid.x * 4u + jj];
                acc[jj] = acc[jj] + av[0] * bv;
                acc[4u + jj] = acc[4u + jj] + av[1] * bv;
                acc[8u + jj] = acc[8u + jj] + av[2] * bv;
                acc[12u + jj] = acc[12u + jj] + av[3] * bv;
            }
        }
        workgroupBarrier();
    }
    // Split, the epilogue waits for the sum of the slices.
    let flags = select(0u, p[7], S == 1u);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = row0 + lid.y * 4u + i;
        for (var jj = 0u; jj < 4u; jj = jj + 1u) {
            let c = col0 + lid.x * 4u + jj;
            if (r < M && c < N) {
                var v = acc[i * 4u + jj];
                if ((flags & 1u) != 0u) { v = v + bias[c]; }
                if ((flags & 2u) != 0u) { v = select(0.0, v, v > 0.0 || is_nan(v)); }
                out[wid.z * M * N + r * N + c] = v;
            }
        }
    }
}

// A few rows (batch-1 inference, small batches) or columns (a classifier's last layer): one
// workgroup per output element, its 64
// threads splitting K (thread t takes k = t, t + 64, …) and adding their partial sums in
// workgroup memory. Why: the tiled kernel above computes 64 rows per workgroup whatever M is, so
// at M = 1 it does 64 times the arithmetic and runs its whole K loop on N/64 workgroups (2 for
// SimpleNN's first layer), and likewise for few columns; here N·M workgroups share the work. Same parameters and bindings;
// dispatched as (N, M, batch).
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn gemv_main(@builtin(workgroup_id) local_wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = grid_id(local_wid);
    let M = p[0];
    let N = p[1];
    let K = p[2];
    let z = wid.z;
    let a0 = strided(z, 10u) + wid.y * p[3];
    let b0 = strided(z, 10u + 2u + 2u * p[10]) + wid.x * p[6];
    var s = 0.0;
    for (var k = lid.x; k < K; k = k + 64u) {
        s = s + a[a0 + k * p[4]] * b[b0 + k * p[5]];
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w >> 1u) {
        if (lid.x < w) {
            partial[lid.x] = partial[lid.x] + partial[lid.x + w];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        var v = partial[0];
        let flags = p[7];
        if ((flags & 1u) != 0u) { v = v + bias[wid.x]; }
        if ((flags & 2u) != 0u) { v = select(0.0, v, v > 0.0 || is_nan(v)); }
        out[z * M * N + wid.y * N + wid.x] = v;
    }
}
