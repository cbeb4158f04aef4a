// Dropout's mask from the CPU's counter-based stream (Philox 4x32-10, rng.rs), so both devices
// draw the same mask: element i is kept when u_i ≥ p, u_i the 53-bit uniform made of words
// base + 2i (low) and base + 2i + 1 (high) of the stream; in integers, (bits >> 11) ≥ ⌈p·2⁵³⌉.
// p = [n, seed lo, seed hi, stream lo, stream hi, base lo, base hi, threshold lo, threshold hi,
//      scale (f32 bits)]
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;

// The 64-bit product of two 32-bit words as (high, low), from 16-bit limbs.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu; let a1 = a >> 16u;
    let b0 = b & 0xffffu; let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, lo);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round = round + 1u) {
        if (round > 0u) {
            k = vec2<u32>(k.x + 0x9E3779B9u, k.y + 0xBB67AE85u);
        }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Word `index` (as (lo, hi)) of the stream.
fn word_at(lo: u32, hi: u32) -> u32 {
    // block = index / 4, as 64 bits.
    let block_lo = (lo >> 2u) | (hi << 30u);
    let block_hi = hi >> 2u;
    let out = philox(vec4<u32>(block_lo, block_hi, p[3], p[4]), vec2<u32>(p[1], p[2]));
    return out[lo & 3u];
}

@compute @workgroup_size(256)
fn mask_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p[0]) { return; }
    // index = base + 2i, with the carry into the high word.
    let two_i = 2u * i;
    let lo = p[5] + two_i;
    let hi = p[6] + select(0u, 1u, lo < p[5]) + (i >> 31u);
    let w_lo = word_at(lo, hi);
    let lo1 = lo + 1u;
    let w_hi = word_at(lo1, hi + select(0u, 1u, lo1 == 0u));
    // v = bits >> 11: its high 21 bits and low 32 bits.
    let v_hi = w_hi >> 11u;
    let v_lo = (w_hi << 21u) | (w_lo >> 11u);
    let keep = v_hi > p[8] || (v_hi == p[8] && v_lo >= p[7]);
    mask[i] = select(0.0, bitcast<f32>(p[9]), keep);
}
