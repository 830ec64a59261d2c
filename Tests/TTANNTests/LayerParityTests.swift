import Foundation
import Testing
import TTAData
import TTAKernels
import TTANN
import TTATensor
import TTATestSupport

/// A store holding one layer, with every parameter trainable.
private func single<L: Module>(_ make: (ParameterStore) -> L) -> (ParameterStore, L) {
    let store = ParameterStore()
    let layer = make(store)
    store.finalize()
    store.setTrainable(.all)
    return (store, layer)
}

/// Forward, then backward of `Σ y ⊙ dy`, through `layer`; returns (y, dx).
private func run(_ layer: Module, _ x: Tensor, _ dy: Tensor) -> (Tensor, Tensor) {
    let y = layer.forward(x, .training)
    let dx = layer.backward(dy, needInputGradient: true)!
    return (y, dx)
}

/// Every layer against PyTorch goldens and against central finite differences.
@Suite struct LayerParityTests {
    /// Golden: `conv2d_cases()` in scripts/make_fixtures.py. The `c16` cases (3x3, stride 1, 16 channels in and
    /// out, paddings 1, 0 and 2) are where the layer takes Winograd F(4x4): its backward pass to the input always,
    /// its forward pass when nothing is recorded (`.inference`); the recorded forward takes the GEMM. Both forward
    /// passes are compared.
    @Test(arguments: ["k3s1p1", "k3s2p1", "k1s2p0", "k1s1p0", "k3s1p1g2", "k3s2p1g4", "k3s1p0", "k3s1p1c16", "k3s1p0c16", "k3s1p2c16"])
    func conv2dMatchesPyTorch(_ name: String) throws {
        let f = try fixture("conv2d.safetensors")
        let cases = try JSONSerialization.jsonObject(with: Data(f.metadata["cases"]!.utf8)) as! [String: [String: Int]]
        let p = cases[name]!
        let w = try f.tensor("\(name).weight")
        let (store, conv) = single {
            Conv2d($0, name: "conv", inputChannels: p["c"]!, outputChannels: p["o"]!, kernelSize: p["k"]!,
                   stride: p["stride"]!, padding: p["padding"]!, groups: p["groups"]!)
        }
        store.set("conv.weight", w)
        let x = try f.tensor("\(name).x"), dy = try f.tensor("\(name).dy")
        // Which algorithm each pass takes: Winograd exactly in the `c16` cases (this layer's geometry, as the layer builds it).
        let winograd = name.hasSuffix("c16")
        let g = conv.geometry(for: x.shape)
        #expect(ConvAlgorithm.winograd && g.takesWinograd(.inference) == winograd && g.takesWinograd(.backwardInput) == winograd
                && !g.takesWinograd(.recordedForward), "\(name): \(g)")
        let (y, dx) = run(conv, x, dy)
        expectClose(y, try f.tensor("\(name).y"), "\(name) y")
        // Winograd's float32 rounding: 2-3e-6 of the largest value in a float32 simulation of F(4x4) on these cases.
        let tolerance = winograd ? 2e-5 : 1e-4
        expectClose(dx, try f.tensor("\(name).dx"), tolerance: tolerance, "\(name) dx")
        expectClose(store.gradient("conv.weight")!, try f.tensor("\(name).dweight"), "\(name) dweight")
        // The forward pass no backward pass follows (a prediction): Winograd in the `c16` cases.
        expectClose(conv.forward(x, .inference), try f.tensor("\(name).y"), tolerance: tolerance, "\(name) y (inference)")

        // Weight gradient skipped when the weight is frozen; input gradient skipped when not asked for.
        store.zeroGrads()
        store.setTrainable(.none)
        _ = conv.forward(x, .training)
        #expect(conv.backward(dy, needInputGradient: false) == nil)
        #expect(store.gradient("conv.weight")!.storage.allSatisfy { $0 == 0 })
    }

    /// Golden: `batchnorm_cases()` in scripts/make_fixtures.py.
    @Test(arguments: ["eval", "train_untracked", "train_tracked"])
    func batchNormMatchesPyTorch(_ mode: String) throws {
        let f = try fixture("batchnorm.safetensors")
        let (store, bn) = single { BatchNorm2d($0, name: "bn", features: 3) }
        for k in ["weight", "bias", "running_mean", "running_var"] { store.set("bn.\(k)", try f.tensor(k)) }
        bn.mode = ["eval": .runningStatistics, "train_untracked": .batchStatistics,
                   "train_tracked": .batchStatisticsUpdatingRunning][mode]!
        let (y, dx) = run(bn, try f.tensor("x"), try f.tensor("dy"))
        expectClose(y, try f.tensor("\(mode).y"), "\(mode) y")
        expectClose(dx, try f.tensor("\(mode).dx"), "\(mode) dx")
        expectClose(store.gradient("bn.weight")!, try f.tensor("\(mode).dweight"), "\(mode) dweight")
        expectClose(store.gradient("bn.bias")!, try f.tensor("\(mode).dbias"), "\(mode) dbias")
        switch mode {
        case "train_tracked":
            expectClose(store.tensor("bn.running_mean")!, try f.tensor("train_tracked.running_mean"), "running_mean")
            expectClose(store.tensor("bn.running_var")!, try f.tensor("train_tracked.running_var"), "running_var (unbiased update)")
            let y2 = bn.forward(try f.tensor("x2"), .inference)
            expectClose(y2, try f.tensor("train_tracked.y2"), "second batch y")
            expectClose(store.tensor("bn.running_mean")!, try f.tensor("train_tracked.running_mean2"), "running_mean after 2")
            expectClose(store.tensor("bn.running_var")!, try f.tensor("train_tracked.running_var2"), "running_var after 2")
            #expect(store.counters["bn.num_batches_tracked"] == (try f.int64Values("train_tracked.num_batches_tracked")).first)
        default:
            // Running buffers untouched in the other modes.
            expectClose(store.tensor("bn.running_mean")!, try f.tensor("running_mean"), tolerance: 0, "running_mean unchanged")
            expectClose(store.tensor("bn.running_var")!, try f.tensor("running_var"), tolerance: 0, "running_var unchanged")
            #expect(store.counters["bn.num_batches_tracked"] == 0)
        }
    }

    /// Golden: `batchnorm_cases()` ("cumulative.*": momentum=None averages over batches).
    @Test func batchNormCumulativeMomentum() throws {
        let f = try fixture("batchnorm.safetensors")
        let (store, bn) = single { BatchNorm2d($0, name: "bn", features: 3, momentum: nil) }
        store.set("bn.running_mean", try f.tensor("running_mean"))
        store.set("bn.running_var", try f.tensor("running_var"))
        bn.mode = .batchStatisticsUpdatingRunning
        _ = bn.forward(try f.tensor("x"), .inference)
        _ = bn.forward(try f.tensor("x2"), .inference)
        expectClose(store.tensor("bn.running_mean")!, try f.tensor("cumulative.running_mean"), "cumulative mean")
        expectClose(store.tensor("bn.running_var")!, try f.tensor("cumulative.running_var"), "cumulative var")
    }

    /// Golden: `elementwise_cases()` in scripts/make_fixtures.py.
    @Test func reluLinearPoolingSoftmaxMatchPyTorch() throws {
        let f = try fixture("misc.safetensors")
        let (ry, rdx) = run(ReLU(), try f.tensor("relu.x"), try f.tensor("relu.dy"))
        expectClose(ry, try f.tensor("relu.y"), "relu y")
        expectClose(rdx, try f.tensor("relu.dx"), "relu dx")

        let (store, lin) = single { Linear($0, name: "fc", inputFeatures: 7, outputFeatures: 3) }
        store.set("fc.weight", try f.tensor("linear.weight"))
        store.set("fc.bias", try f.tensor("linear.bias"))
        let (ly, ldx) = run(lin, try f.tensor("linear.x"), try f.tensor("linear.dy"))
        expectClose(ly, try f.tensor("linear.y"), "linear y")
        expectClose(ldx, try f.tensor("linear.dx"), "linear dx")
        expectClose(store.gradient("fc.weight")!, try f.tensor("linear.dweight"), "linear dweight")
        expectClose(store.gradient("fc.bias")!, try f.tensor("linear.dbias"), "linear dbias")

        let (gy, gdx) = run(GlobalAvgPool(), try f.tensor("gap.x"), try f.tensor("gap.dy"))
        expectClose(gy, try f.tensor("gap.y"), "gap y")
        expectClose(gdx, try f.tensor("gap.dx"), "gap dx")

        let (ay, adx) = run(AvgPool2d(kernelSize: 2), try f.tensor("avgpool.x"), try f.tensor("avgpool.dy"))
        expectClose(ay, try f.tensor("avgpool.y"), "avgpool y")
        expectClose(adx, try f.tensor("avgpool.dx"), "avgpool dx")

        let (sy, sdx) = run(RowSoftmax(), try f.tensor("softmax.x"), try f.tensor("softmax.dy"))
        expectClose(sy, try f.tensor("softmax.y"), "softmax y")
        expectClose(sdx, try f.tensor("softmax.dx"), "softmax dx")
        let (ly2, ldx2) = run(RowSoftmax(log: true), try f.tensor("softmax.x"), try f.tensor("softmax.dy"))
        expectClose(ly2, try f.tensor("logsoftmax.y"), "log_softmax y")
        expectClose(ldx2, try f.tensor("logsoftmax.dx"), "log_softmax dx")
        expectClose(try f.tensor("softmax.x").softmaxRows(), try f.tensor("softmax.y"), "Tensor.softmaxRows")
    }
}

/// Every layer's backward against central finite differences of `Σ forward(x) ⊙ r`.
@Suite struct FiniteDifferenceTests {
    static let names = ["conv3x3s2", "conv3x3g2", "bn-batch", "bn-running", "bn-robust", "linear", "relu", "gap", "avgpool", "softmax", "logsoftmax"]

    /// The layer under test, its store (nil when it has no parameters) and its input shape.
    static func make(_ name: String) -> (ParameterStore?, Module, [Int]) {
        switch name {
        case "conv3x3s2": let (s, l) = single { Conv2d($0, name: "c", inputChannels: 3, outputChannels: 4, kernelSize: 3, stride: 2, padding: 1) }; return (s, l, [2, 3, 5, 5])
        case "conv3x3g2": let (s, l) = single { Conv2d($0, name: "c", inputChannels: 4, outputChannels: 4, kernelSize: 3, padding: 1, groups: 2) }; return (s, l, [2, 4, 4, 4])
        case "bn-batch": let (s, l) = single { BatchNorm2d($0, name: "b", features: 3) }; l.mode = .batchStatistics; return (s, l, [3, 3, 4, 4])
        case "bn-running": let (s, l) = single { BatchNorm2d($0, name: "b", features: 3) }; return (s, l, [2, 3, 4, 4])
        case "bn-robust": let (s, l) = single { BatchNorm2d($0, name: "b", features: 3) }; l.mode = .robust(alpha: 0.3); return (s, l, [2, 3, 4, 4])
        case "linear": let (s, l) = single { Linear($0, name: "l", inputFeatures: 6, outputFeatures: 4) }; return (s, l, [3, 6])
        case "relu": return (nil, ReLU(), [2, 3, 4, 4])
        case "gap": return (nil, GlobalAvgPool(), [2, 3, 4, 4])
        case "avgpool": return (nil, AvgPool2d(kernelSize: 2), [2, 3, 4, 4])
        case "softmax": return (nil, RowSoftmax(), [3, 5])
        default: return (nil, RowSoftmax(log: true), [3, 5])
        }
    }

    @Test(arguments: names)
    func inputAndParameterGradients(_ name: String) {
        let (store, layer, shape) = Self.make(name)
        if let store {   // non-trivial parameters; running variances kept positive
            for (i, v) in randomFloats(store.totalCount, seed: 11, scale: 0.5).enumerated() { store.allValuesMutable[i] = v }
            for e in store.entries where e.name.hasSuffix("running_var") {
                store.set(e.name, Tensor(shape: e.shape, storage: store.tensor(e.name)!.storage.map { abs($0) + 0.5 }))
            }
        }
        // Robust BN rewrites its running statistics on every forward: each evaluation starts from the same ones.
        let buffers = store.map { s in s.entries.filter { $0.kind == .buffer }.map { ($0.name, s.tensor($0.name)!) } } ?? []
        func restoreBuffers() { for (name, t) in buffers { store?.set(name, t) } }
        let x = randomFloats(shape.product, seed: 12)
        let yShape = layer.forward(Tensor(shape: shape, storage: x), .inference).shape
        let r = randomFloats(yShape.product, seed: 13)
        let f: ([Float]) -> Double = {
            restoreBuffers()
            return weightedSum(layer.forward(Tensor(shape: shape, storage: $0), .inference).storage, r)
        }
        store?.zeroGrads()
        restoreBuffers()
        _ = layer.forward(Tensor(shape: shape, storage: x), .training)
        let dx = layer.backward(Tensor(shape: yShape, storage: r), needInputGradient: true)!
        let errX = finiteDifferenceError(at: x, analytic: dx.storage, f)
        #expect(errX < 5e-3, "\(name): input gradient FD error \(errX)")

        guard let store else { return }
        for e in store.entries where e.kind == .parameter {
            let analytic = store.gradient(e.name)!.storage
            let p0 = store.tensor(e.name)!
            let err = finiteDifferenceError(at: p0.storage, analytic: analytic) { p in
                store.set(e.name, Tensor(shape: e.shape, storage: p))
                defer { store.set(e.name, p0) }
                return f(x)
            }
            #expect(err < 5e-3, "\(name): \(e.name) gradient FD error \(err)")
        }
    }
}
