import Foundation
import TTAModels
import TTANN
import TTATensor

/// SAR (Niu et al., ICLR 2023, openreview g2YraF75Tj): sharpness-aware, reliable entropy minimisation
/// over the norm-layer affine parameters (batch statistics), with model recovery.
///
/// Per batch: entropies `H_i`; reliable `S1 = {H_i < E0}`, `E0 = 0.4·ln C`; SAM step 1: the gradient
/// `g` of `mean over S1 of H_i` moves the parameters to `θ + ρ·g/(‖g‖₂ + 1e-12)`; there, a second
/// forward keeps `S2 = {i ∈ S1 : H′_i < E0}` and `L2 = mean over S2 of H′_i`; SAM step 2: back to `θ`,
/// then SGD (momentum 0.9, no Nesterov) with the gradient of `L2`. The EMA `e ← 0.9·e + 0.1·L2` (when
/// `S2` is not empty) triggers a reset of the model to the source when `e < e_m` (0.2); the SGD keeps its
/// momentum through it and through `reset()`, as the reference's does. The SGD step is taken even
/// when a filter leaves nothing, as in the reference (the momentum still moves the parameters).
/// Output: the logits of the first forward pass, before the update.
///
/// The reference leaves out ResNet `layer4` and ViT `blocks.9`–`11` and the final `norm` (timm names);
/// no such layer exists in the WideResNets, so there every BN affine parameter is adapted.
public final class SARMethod: RestoresSource {
    public let name = "sar"
    public var needsBatchStatistics: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// The moving average of the second-pass loss; nil after a reset.
    public private(set) var lossAverage: Double?
    /// How many times model recovery reset the model since the last `reset()`.
    public private(set) var recoveries = 0
    public var sourceRestores: Int { recoveries }

    private var optimizer: SGD?
    private var sourceState: ParameterStore.Snapshot?
    private var margin: Float = 0

    public init(_ configuration: MethodConfiguration) {
        self.configuration = configuration
        steps = configuration.steps
    }

    /// Whether SAR leaves the norm layer (module) `name` frozen: the top of ResNets and ViTs, as the
    /// reference's `collect_params` (substrings of the module name, plus the top-level `norm`).
    public static func isExcluded(layer name: String) -> Bool {
        name == "norm" || ["layer4", "blocks.9", "blocks.10", "blocks.11", "norm."].contains { name.contains($0) }
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatistics)
        let selected = model.store.entries.filter { e in
            e.isNormAffine && !Self.isExcluded(layer: String(e.name[..<(e.name.lastIndex(of: ".") ?? e.name.endIndex)]))
        }
        model.store.setTrainable(.names(Set(selected.map(\.name))))
        optimizer = SGD(model.store, lr: configuration.lr, momentum: configuration.momentum)
        margin = entropyMargin(factor: configuration.entropyMarginFactor, numClasses: model.numClasses)
        sourceState = model.store.snapshot()
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let optimizer, let sourceState else { throw AdaptationError("sar: step before configure") }
        let store = model.store
        let logits = timer.measure(.forward) { model.forward(x, .training) }
        let reliable = reliableSamples(softmaxEntropies(logits), below: margin)
        timer.measure(.backward) { model.backward(subsetEntropyLoss(logits, samples: reliable).gradient) }
        let origin = timer.measure(.update) { ascend(store) }

        let perturbed = timer.measure(.forward) { model.forward(x, .training) }
        let kept = reliableSamples(softmaxEntropies(perturbed), below: margin, among: reliable)
        let loss = subsetEntropyLoss(perturbed, samples: kept)
        if !loss.value.isNaN {
            lossAverage = lossAverage.map { 0.9 * $0 + (1 - 0.9) * Double(loss.value) } ?? Double(loss.value)
        }
        timer.measure(.backward) { model.backward(loss.gradient) }
        timer.measure(.update) {
            restore(store, to: origin)
            optimizer.step()
            store.zeroGrads()
        }

        // Recovery and reset reload the model, not the SGD's momentum: the reference reloads its SAM wrapper's
        // state_dict, which leaves the inner SGD's momentum buffers as they are.
        if let e = lossAverage, e < Double(configuration.sarResetConstant) {
            store.restore(sourceState)
            lossAverage = nil
            recoveries += 1
        }
        return logits
    }

    public func reset() {
        lossAverage = nil
        recoveries = 0
    }

    /// The SGD state, the loss EMA and the recovery count.
    public func captureState() -> MethodState {
        var s = MethodState()
        if let optimizer { s.store(optimizer.state, as: "optimizer") }
        if let lossAverage { s.numbers["lossAverage"] = [lossAverage] }
        s.numbers["recoveries"] = [Double(recoveries)]
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let optimizer else { throw AdaptationError("sar: state restored before configure") }
        try state.restore(optimizer, from: "optimizer", of: name)
        lossAverage = state.number("lossAverage")
        recoveries = try state.count("recoveries", of: name)
    }

    /// SAM's first step: `θ ← θ + ρ·g/(‖g‖₂ + 1e-12)` over the trainable parameters (one global norm),
    /// then zero the gradients. Returns the old `θ` of the trainable entries, by entry index.
    private func ascend(_ store: ParameterStore) -> [Int: [Float]] {
        let v = store.allValuesMutable, g = store.allGrads
        var sumSquares = 0.0
        for (i, e) in store.entries.enumerated() where store.trainable[i] {
            for j in e.offset..<(e.offset + e.count) { sumSquares += Double(g[j]) * Double(g[j]) }
        }
        let scale = Float(Double(configuration.samRho) / (sumSquares.squareRoot() + 1e-12))
        var origin: [Int: [Float]] = [:]
        for (i, e) in store.entries.enumerated() where store.trainable[i] {
            origin[i] = Array(v[e.offset..<(e.offset + e.count)])
            for j in e.offset..<(e.offset + e.count) { v[j] += scale * g[j] }
        }
        store.zeroGrads()
        return origin
    }

    private func restore(_ store: ParameterStore, to origin: [Int: [Float]]) {
        let v = store.allValuesMutable
        for (i, old) in origin {
            let offset = store.entries[i].offset
            for (k, x) in old.enumerated() { v[offset + k] = x }
        }
    }
}
