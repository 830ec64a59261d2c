import TTAKernels
import TTATensor

/// `F.avg_pool2d(x, k)` (stride k, no padding) on `(N, C, H, W)`.
public final class AvgPool2d: Module {
    public let kernelSize: Int
    private var savedShape: [Int]?
    public init(kernelSize: Int) { self.kernelSize = kernelSize }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4 && x.shape[2] >= kernelSize && x.shape[3] >= kernelSize,
                     "AvgPool2d(\(kernelSize)): expected (N, C, H≥k, W≥k), got \(x.shape)")
        let (rows, h, w, k) = (x.shape[0] * x.shape[1], x.shape[2], x.shape[3], kernelSize)
        var y = Tensor(shape: [x.shape[0], x.shape[1], (h - k) / k + 1, (w - k) / k + 1])
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in avgPool2dForward(x: xp.baseAddress!, y: yp.baseAddress!, rows: rows, h: h, w: w, kernel: k, stride: k) }
        }
        savedShape = ctx.recording ? x.shape : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let s = savedShape else { preconditionFailure("AvgPool2d.backward without a recorded forward") }
        savedShape = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: s)
        dy.withUnsafeBufferPointer { dyp in
            dx.withUnsafeMutableBufferPointer { dxp in
                avgPool2dBackward(dy: dyp.baseAddress!, dx: dxp.baseAddress!, rows: s[0] * s[1], h: s[2], w: s[3], kernel: kernelSize, stride: kernelSize)
            }
        }
        return dx
    }
}

/// Row-wise softmax of `(N, C)`.
public final class Softmax: Module {
    private var savedOutput: Tensor?
    public init() {}

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let y = x.softmaxRows()
        savedOutput = ctx.recording ? y : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let y = savedOutput else { preconditionFailure("Softmax.backward without a recorded forward") }
        savedOutput = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: y.shape)
        dy.withUnsafeBufferPointer { dyp in
            y.withUnsafeBufferPointer { yp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    softmaxRowsBackward(dy: dyp.baseAddress!, y: yp.baseAddress!, dx: dxp.baseAddress!, n: y.shape[0], c: y.shape[1])
                }
            }
        }
        return dx
    }
}

/// Row-wise log-softmax of `(N, C)`.
public final class LogSoftmax: Module {
    private var savedOutput: Tensor?
    public init() {}

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let y = x.logSoftmaxRows()
        savedOutput = ctx.recording ? y : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let y = savedOutput else { preconditionFailure("LogSoftmax.backward without a recorded forward") }
        savedOutput = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: y.shape)
        dy.withUnsafeBufferPointer { dyp in
            y.withUnsafeBufferPointer { yp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    logSoftmaxRowsBackward(dy: dyp.baseAddress!, y: yp.baseAddress!, dx: dxp.baseAddress!, n: y.shape[0], c: y.shape[1])
                }
            }
        }
        return dx
    }
}
