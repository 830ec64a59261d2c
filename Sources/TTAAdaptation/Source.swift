import TTAModels
import TTANN
import TTATensor

/// The methods that adapt nothing but the BN statistics of a single forward pass, and `source`:
/// each sets every BN layer to one mode, trains nothing, and returns the logits of that pass.
///
/// - `source` (BN-0): running (source) statistics.
/// - `norm_test` (BN-1, AdaBN, Tent's `norm.py`): each batch's own statistics; the running buffers are
///   still updated with momentum 0.1 but never used, as in the reference (BN in train mode).
/// - `norm_alpha` (α-BN): `(1−α)·source + α·batch` statistics (unbiased batch variance); nothing persists.
///   Reference configs use α = 0.1 at batch size 1.
public final class ForwardOnlyMethod: AdaptationMethod {
    public let name: String
    public let steps = 1
    public let mode: BatchNormMode
    public var needsBatchStatistics: Bool { mode != .runningStatistics }

    public init(name: String, mode: BatchNormMode) {
        self.name = name
        self.mode = mode
    }

    public static func source() -> ForwardOnlyMethod { ForwardOnlyMethod(name: "source", mode: .runningStatistics) }
    public static func normTest() -> ForwardOnlyMethod { ForwardOnlyMethod(name: "norm_test", mode: .batchStatisticsUpdatingRunning) }
    public static func normAlpha(_ alpha: Float) -> ForwardOnlyMethod { ForwardOnlyMethod(name: "norm_alpha", mode: .alphaMixed(alpha: alpha)) }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(mode)
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        timer.measure(.forward) { model.forward(x, .inference) }
    }

    public func reset() {}

    /// Nothing persists in the method (the BN statistics live in the model).
    public func captureState() -> MethodState { MethodState() }
    public func restoreState(_ state: MethodState) throws {}
}
