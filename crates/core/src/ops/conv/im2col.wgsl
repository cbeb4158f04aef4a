// Convolution's column buffers (groups of 1), for the GEMM that does the arithmetic.
// p = [N, C, H, W, KH, KW, OH, OW, stride h, stride w, pad h, pad w, dil h, dil w]
// im2col:  cols[n, c·KH·KW + kh·KW + kw, oh·OW + ow] = x[n, c, oh·sh − ph + kh·dh, ow·sw − pw + kw·dw]
//          (0 outside the input), one thread per column element; x contiguous.
// col2im:  dx[n, c, ih, iw] = Σ over (kh, kw) of dcols at the (oh, ow) whose window puts that
//          tap on (ih, iw): a gather, one thread per input element, no atomics.
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn im2col_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let C = p[1]; let H = p[2]; let W = p[3]; let KH = p[4]; let KW = p[5]; let OH = p[6]; let OW = p[7];
    let L = OH * OW;
    let K = C * KH * KW;
    if (i >= p[0] * K * L) { return; }
    let l = i % L;
    let k = (i / L) % K;
    let n = i / (L * K);
    let kw = k % KW;
    let kh = (k / KW) % KH;
    let c = k / (KW * KH);
    let oh = l / OW;
    let ow = l % OW;
    let ih = i32(oh * p[8] + kh * p[12]) - i32(p[10]);
    let iw = i32(ow * p[9] + kw * p[13]) - i32(p[11]);
    var v = 0.0;
    if (ih >= 0 && ih < i32(H) && iw >= 0 && iw < i32(W)) {
        v = src[((n * C + c) * H + u32(ih)) * W + u32(iw)];
    }
    dst[i] = v;
}

@compute @workgroup_size(256)
fn col2im_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let C = p[1]; let H = p[2]; let W = p[3]; let KH = p[4]; let KW = p[5]; let OH = p[6]; let OW = p[7];
    if (i >= p[0] * C * H * W) { return; }
    let iw = i % W;
    let ih = (i / W) % H;
    let c = (i / (W * H)) % C;
    let n = i / (W * H * C);
    let L = OH * OW;
    let K = C * KH * KW;
    var acc = 0.0;
    for (var kh = 0u; kh < KH; kh = kh + 1u) {
        let th = i32(ih) + i32(p[10]) - i32(kh * p[12]);
        if (th < 0 || th % i32(p[8]) != 0) { continue; }
        let oh = u32(th) / p[8];
        if (oh >= OH) { continue; }
        for (var kw = 0u; kw < KW; kw = kw + 1u) {
            let tw = i32(iw) + i32(p[11]) - i32(kw * p[13]);
            if (tw < 0 || tw % i32(p[9]) != 0) { continue; }
            let ow = u32(tw) / p[9];
            if (ow >= OW) { continue; }
            let k = (c * KH + kh) * KW + kw;
            acc = acc + src[(n * K + k) * L + oh * OW + ow];
        }
    }
    dst[i] = acc;
}
