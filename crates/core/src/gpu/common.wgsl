// Shared by every strata kernel (prepended to each kernel's source).
// Binding 0 is the kernel's parameters as 32-bit words; f32 parameters are bit casts.
@group(0) @binding(0) var<storage, read> p: array<u32>;

const WG: u32 = 256u;

// The item index of a one-dimensional dispatch spread over x and y (see groups_1d).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

// Whether v is NaN, tested on the bits: shader compilers may assume finite math and fold
// `v != v` (or `v == v`) to a constant, which llvmpipe does, losing NaN propagation.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// tanh through exp, finite for any input (some drivers' tanh gives NaN for large ones).
fn tanh_safe(v: f32) -> f32 {
    return 1.0 - 2.0 / (exp(2.0 * v) + 1.0);
}

// The buffer offset of row-major element `i` of a strided layout stored in p from `base`:
// [ndim, offset, shape[0..ndim], strides[0..ndim]].
fn strided(i: u32, base: u32) -> u32 {
    let ndim = p[base];
    var rest = i;
    var at = p[base + 1u];
    for (var d = i32(ndim) - 1; d >= 0; d = d - 1) {
        let size = p[base + 2u + u32(d)];
        let stride = p[base + 2u + ndim + u32(d)];
        at = at + (rest % size) * stride;
        rest = rest / size;
    }
    return at;
}
