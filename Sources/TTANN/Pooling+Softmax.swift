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

/// Row-wise softmax (or, with `log`, log-softmax) of `(N, C)`. Keeps its output for backward.
public final class RowSoftmax: Module {
    public let log: Bool
    private var savedOutput: Tensor?
    public init(log: Bool = false) { self.log = log }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let y = log ? x.logSoftmaxRows() : x.softmaxRows()
        savedOutput = ctx.recording ? y : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let y = savedOutput else { preconditionFailure("RowSoftmax.backward without a recorded forward") }
        savedOutput = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: y.shape)
        let backward = log ? logSoftmaxRowsBackward : softmaxRowsBackward
        dy.withUnsafeBufferPointer { dyp in
            y.withUnsafeBufferPointer { yp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    backward(dyp.baseAddress!, yp.baseAddress!, dxp.baseAddress!, y.shape[0], y.shape[1])
                }
            }
        }
        return dx
    }
}

/// `nn.MaxPool2d(kernelSize, stride, padding)` on `(N, C, H, W)` (ResNet-50's stem: 3, 2, 1).
/// Keeps the index of each output's source element for backward.
public final class MaxPool2d: Module {
    public let kernelSize, stride, padding: Int
    private var saved: (shape: [Int], argmax: [Int32])?

    public init(kernelSize: Int, stride: Int, padding: Int = 0) {
        (self.kernelSize, self.stride, self.padding) = (kernelSize, stride, padding)
    }

    func geometry(_ shape: [Int]) -> MaxPool2dGeometry {
        precondition(shape.count == 4, "MaxPool2d: expected (N, C, H, W), got \(shape)")
        return MaxPool2dGeometry(rows: shape[0] * shape[1], h: shape[2], w: shape[3], kernel: kernelSize, stride: stride, padding: padding)
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let g = geometry(x.shape)
        var y = Tensor(shape: [x.shape[0], x.shape[1], g.ho, g.wo])
        var argmax = [Int32](repeating: 0, count: y.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in maxPool2dForward(x: xp.baseAddress!, y: yp.baseAddress!, argmax: &argmax, g) }
        }
        saved = ctx.recording ? (x.shape, argmax) : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let (shape, argmax) = saved else { preconditionFailure("MaxPool2d.backward without a recorded forward") }
        saved = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: shape)
        dy.withUnsafeBufferPointer { dyp in
            dx.withUnsafeMutableBufferPointer { dxp in maxPool2dBackward(dy: dyp.baseAddress!, argmax: argmax, dx: dxp.baseAddress!, geometry(shape)) }
        }
        return dx
    }
}
