/// 2-D max pooling (`F.max_pool2d(x, k, stride, padding)`), NCHW, square window, padding counted as −∞.
///
/// The forward pass records, for every output, the flat index within its input plane of the element
/// it took, so backward is a scatter. Ties go to the first element in row-major window order, as
/// PyTorch's CPU kernel (`val > max || isnan(val)`, so a NaN wins its window).
package struct MaxPool2dGeometry: Sendable, Equatable {
    package var rows, h, w, kernel, stride, padding: Int

    /// `rows` planes (N·C) of `h`×`w`.
    package init(rows: Int, h: Int, w: Int, kernel: Int, stride: Int, padding: Int) {
        precondition(kernel >= 1 && stride >= 1 && padding >= 0 && 2 * padding <= kernel,
                     "max_pool2d: kernel \(kernel), stride \(stride), padding \(padding) (padding must be at most half the kernel)")
        precondition(h + 2 * padding >= kernel && w + 2 * padding >= kernel, "max_pool2d: kernel \(kernel) larger than padded input \(h)x\(w)")
        (self.rows, self.h, self.w, self.kernel, self.stride, self.padding) = (rows, h, w, kernel, stride, padding)
    }
    package var ho: Int { (h + 2 * padding - kernel) / stride + 1 }
    package var wo: Int { (w + 2 * padding - kernel) / stride + 1 }
}

/// `y = max_pool2d(x)`; `argmax[i]` is the index within its plane of the input `y[i]` came from.
/// Planes run in parallel.
package func maxPool2dForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>,
                              _ g: MaxPool2dGeometry) {
    let (ho, wo, hw) = (g.ho, g.wo, g.h * g.w)
    let runs = splitRange(g.rows, parts: min(g.rows, 4 * KernelThreads.count))
    parallelFor(runs.count) { r in
        for plane in runs[r] {
            let xp = x + plane * hw, yp = y + plane * ho * wo, ap = argmax + plane * ho * wo
            for oy in 0..<ho {
                let y0 = max(oy * g.stride - g.padding, 0), y1 = min(oy * g.stride - g.padding + g.kernel, g.h)
                for ox in 0..<wo {
                    let x0 = max(ox * g.stride - g.padding, 0), x1 = min(ox * g.stride - g.padding + g.kernel, g.w)
                    var best = -Float.infinity, at = y0 * g.w + x0
                    for iy in y0..<y1 {
                        for ix in x0..<x1 {
                            let v = xp[iy * g.w + ix]
                            if v > best || v.isNaN { best = v; at = iy * g.w + ix }
                        }
                    }
                    yp[oy * wo + ox] = best
                    ap[oy * wo + ox] = Int32(at)
                }
            }
        }
    }
}

/// `dx += ∂L/∂x`: each `dy` goes to the input its output took. Planes run in parallel.
package func maxPool2dBackward(dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>, dx: UnsafeMutablePointer<Float>,
                               _ g: MaxPool2dGeometry) {
    let (howo, hw) = (g.ho * g.wo, g.h * g.w)
    let runs = splitRange(g.rows, parts: min(g.rows, 4 * KernelThreads.count))
    parallelFor(runs.count) { r in
        for plane in runs[r] {
            for i in 0..<howo { dx[plane * hw + Int(argmax[plane * howo + i])] += dy[plane * howo + i] }
        }
    }
}

// MARK: - Reference twin

/// Direct definition of max pooling and its gradient, for the tests: every output scans its padded
/// window (padding as −∞) in row-major order; `dx` (accumulated) gets `dy` at the first maximum.
package func maxPool2dReference(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                dx: UnsafeMutablePointer<Float>, _ g: MaxPool2dGeometry) {
    for plane in 0..<g.rows {
        for oy in 0..<g.ho {
            for ox in 0..<g.wo {
                var best = -Float.infinity, at = -1
                for ky in 0..<g.kernel {
                    for kx in 0..<g.kernel {
                        let iy = oy * g.stride - g.padding + ky, ix = ox * g.stride - g.padding + kx
                        guard iy >= 0, iy < g.h, ix >= 0, ix < g.w else { continue }
                        let v = x[(plane * g.h + iy) * g.w + ix]
                        if at < 0 || v > best || v.isNaN { best = v; at = (plane * g.h + iy) * g.w + ix }
                    }
                }
                let o = (plane * g.ho + oy) * g.wo + ox
                y[o] = best
                dx[at] += dy[o]
            }
        }
    }
}
