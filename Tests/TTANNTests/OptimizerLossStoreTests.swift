import Testing
import TTANN
import TTATensor
import TTATestSupport

/// SGD and Adam against three PyTorch steps. Golden: `optimizer_cases()` in scripts/make_fixtures.py.
@Suite struct OptimizerTests {
    @Test(arguments: ["sgd_plain", "sgd_momentum", "sgd_nesterov", "adam", "adam_wd"])
    func matchesPyTorch(_ name: String) throws {
        let f = try fixture("optimizers.safetensors")
        let store = ParameterStore()
        store.add("p", shape: [10], kind: .parameter)
        store.finalize()
        store.set("p", try f.tensor("p0"))
        store.setTrainable(.all)
        let opt: Optimizer = switch name {
        case "sgd_plain": SGD(store, lr: 0.1)
        case "sgd_momentum": SGD(store, lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01)
        case "sgd_nesterov": SGD(store, lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: true)
        case "adam": Adam(store, lr: 1e-2)
        default: Adam(store, lr: 1e-3, beta1: 0.8, beta2: 0.99, weightDecay: 0.1)
        }
        for k in 1...3 {
            let g = try f.tensor("grad\(k)")
            for i in 0..<10 { store.allGrads[i] = g.storage[i] }
            opt.step()
            expectClose(store.tensor("p")!, try f.tensor("\(name).step\(k)"), tolerance: 1e-5, "\(name) step \(k)")
        }
        // reset() forgets the state: the next step behaves like a first step. From p0 again with grad1, it
        // lands on the fixture's step1, as the first step did (stale momentum or Adam moments, or a step count
        // not back at 0 for the bias correction, would move it elsewhere).
        opt.reset()
        #expect(opt.state == OptimizerState())
        store.set("p", try f.tensor("p0"))
        let g1 = try f.tensor("grad1")
        for i in 0..<10 { store.allGrads[i] = g1.storage[i] }
        opt.step()
        expectClose(store.tensor("p")!, try f.tensor("\(name).step1"), tolerance: 1e-5, "\(name) first step after reset")
    }

    @Test func frozenParametersAreNotUpdated() {
        let store = ParameterStore()
        store.add("a", shape: [3], kind: .parameter, initial: 1)
        store.add("b", shape: [3], kind: .parameter, initial: 1)
        store.finalize()
        store.setTrainable(.names(["a"]))
        for i in 0..<6 { store.allGrads[i] = 1 }
        Adam(store, lr: 0.1).step()
        // Adam's first step with g = 1: m = (1 − β1)·g, v = (1 − β2)·g², so the bias-corrected
        // m̂ = m/(1 − β1) = 1 and v̂ = v/(1 − β2) = 1, and the step is lr·m̂/(√v̂ + eps) = 0.1/(1 + 1e-8):
        // a = 1 − 0.1 = 0.9 (float32 rounding of the moments and eps move it by < 1e-7).
        expectClose(store.tensor("a")!.storage, [0.9, 0.9, 0.9], tolerance: 1e-6, "a after one Adam step")
        #expect(store.tensor("b")!.storage == [1, 1, 1])
    }
}

/// Losses and their logit gradients. Golden: `loss_cases()` in scripts/make_fixtures.py; plus finite differences.
@Suite struct LossTests {
    @Test func matchPyTorch() throws {
        let f = try fixture("losses.safetensors")
        let z = try f.tensor("logits"), t = try f.tensor("teacher")
        let labels = try f.int64Values("labels").map { Int($0) }
        let cases: [(String, LossResult)] = [
            ("entropy", Loss.softmaxEntropy(z)),
            ("ce", Loss.crossEntropy(z, labels: labels)),
            ("softce", Loss.softCrossEntropy(z, targets: try f.tensor("softce.targets"))),
            ("symce", Loss.symmetricCrossEntropy(z, teacher: t)),
        ]
        for (name, r) in cases {
            expectClose([r.value], try f.tensor("\(name).value").storage, tolerance: 1e-5, "\(name) value")
            expectClose(r.gradient, try f.tensor("\(name).grad"), "\(name) grad")
        }
    }

    @Test func gradientsMatchFiniteDifferences() throws {
        let z = randomFloats(4 * 6, seed: 21, scale: 2), t = Tensor(shape: [4, 6], storage: randomFloats(24, seed: 22))
        let targets = t.softmaxRows()
        let losses: [(String, (Tensor) -> LossResult)] = [
            ("entropy", { Loss.softmaxEntropy($0) }),
            ("ce", { Loss.crossEntropy($0, labels: [0, 5, 2, 2]) }),
            ("softce", { Loss.softCrossEntropy($0, targets: targets) }),
            ("symce", { Loss.symmetricCrossEntropy($0, teacher: t) }),
        ]
        for (name, loss) in losses {
            let g = loss(Tensor(shape: [4, 6], storage: z)).gradient
            let err = finiteDifferenceError(at: z, analytic: g.storage, step: 1e-2) { Double(loss(Tensor(shape: [4, 6], storage: $0)).value) }
            #expect(err < 2e-3, "\(name): FD error \(err)")
        }
    }
}

/// The parameter store: names, selection, snapshot and restore.
@Suite struct ParameterStoreTests {
    func make() -> ParameterStore {
        let s = ParameterStore()
        _ = Conv2d(s, name: "conv", inputChannels: 2, outputChannels: 3, kernelSize: 3)
        _ = BatchNorm2d(s, name: "bn", features: 3)
        _ = Linear(s, name: "fc", inputFeatures: 3, outputFeatures: 2)
        s.finalize()
        return s
    }

    @Test func namesKindsAndSelection() {
        let s = make()
        #expect(s.entries.map(\.name) == ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "fc.weight", "fc.bias"])
        #expect(s.counterNames == ["bn.num_batches_tracked"])
        #expect(s.tensor("bn.running_var")!.storage == [1, 1, 1])
        s.setTrainable(.normAffine)
        #expect(s.trainableNames == ["bn.weight", "bn.bias"])
        s.setTrainable(.all)
        #expect(s.trainableNames == ["conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]) // never buffers
        s.setTrainable(.nameContains(["fc."]))
        #expect(s.trainableNames == ["fc.weight", "fc.bias"])
        #expect(s.parameterCount == 54 + 3 + 3 + 6 + 2)
    }

    @Test func snapshotRestoreIsBitExact() {
        let s = make()
        for i in 0..<s.totalCount { s.allValuesMutable[i] = Float(i) * 0.37 }
        s.counters["bn.num_batches_tracked"] = 5
        let snap = s.snapshot()
        for i in 0..<s.totalCount { s.allValuesMutable[i] = .nan }
        s.counters["bn.num_batches_tracked"] = 9
        s.restore(snap)
        #expect(s.snapshot() == snap)
        #expect(s.counters["bn.num_batches_tracked"] == 5)
    }
}
