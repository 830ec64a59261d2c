import TTAAdaptation

/// How the runner watches a run for model collapse, and what it does then.
///
/// Collapse is judged on the predicted classes of the last `window` batches (rows without a prediction
/// left out): the run has collapsed when one class takes at least `threshold` of them. The window
/// must be full before it is judged. One event is reported each time the share crosses the
/// threshold; after that the monitor waits until it falls below again. With `resetOnCollapse` the
/// adaptor is reset to the source state after the batch that collapsed, and the window is emptied.
///
/// The defaults (10 batches, 0.95) flag a model predicting one class for 95% of 2,000 images at batch
/// size 200, where a healthy model on a balanced benchmark gives each class about 1/C. A stream whose
/// labels really do come in long runs of one class (`correlated` with a small Dirichlet δ, which sorts
/// each domain by label) needs a larger window or a threshold of 1 to avoid false alarms.
public struct CollapsePolicy: Sendable, Codable, Equatable {
    /// Batches the predicted-class distribution is taken over (≥ 1).
    public var window: Int
    /// Share of the most predicted class at or above which the run has collapsed, in (0, 1].
    public var threshold: Double
    /// Reset the adaptor to the source state when a collapse is detected.
    public var resetOnCollapse: Bool

    public init(window: Int = 10, threshold: Double = 0.95, resetOnCollapse: Bool = false) {
        (self.window, self.threshold, self.resetOnCollapse) = (window, threshold, resetOnCollapse)
    }

    /// Checks ranges; the message starts with the option name.
    public func validate() throws {
        guard window >= 1 else { throw RuntimeError("collapse-window must be at least 1, got \(window)") }
        guard threshold > 0 && threshold <= 1 else { throw RuntimeError("collapse-threshold must be in (0, 1], got \(threshold)") }
    }
}

/// One detected collapse.
public struct CollapseEvent: Sendable, Codable, Equatable {
    /// The stream batch (1-based) after which it was detected.
    public var batch: Int
    /// The class that took over the window, and its share of the window's predictions.
    public var dominantClass: Int
    public var share: Double
    /// Whether the adaptor was reset to the source state.
    public var reset: Bool

    public init(batch: Int, dominantClass: Int, share: Double, reset: Bool) {
        (self.batch, self.dominantClass, self.share, self.reset) = (batch, dominantClass, share, reset)
    }
}

/// What the guard and the collapse monitor saw in a run. Batch numbers are 1-based stream positions.
public struct StabilityReport: Sendable, Codable, Equatable {
    /// Batches refused for NaN or infinity in the images: never adapted on, every sample scored wrong.
    public var rejectedBatches: [Int] = []
    /// Batches whose step produced NaN or infinity and was undone; their rows with a finite output are
    /// scored from it (it is computed before the update), the others are scored wrong.
    public var rolledBackBatches: [Int] = []
    /// Samples scored wrong because they had no usable prediction (rejected batch, non-finite output row).
    public var samplesWithoutPrediction: Int = 0
    public var collapses: [CollapseEvent] = []
    public init() {}
}

/// The windowed predicted-class check of `CollapsePolicy`; its state is part of a checkpoint.
public struct CollapseMonitor: Sendable, Codable, Equatable {
    public let policy: CollapsePolicy
    /// Per-class prediction counts of each batch in the window, oldest first.
    private var recent: [[Int: Int]] = []
    private var collapsed = false

    public init(policy: CollapsePolicy) { self.policy = policy }

    /// Adds one batch's predictions (negative entries, rows without a prediction, are left out) and
    /// returns the dominant class and its share when this batch makes the window collapse.
    public mutating func observe(_ predictions: [Int]) -> (dominantClass: Int, share: Double)? {
        var counts: [Int: Int] = [:]
        for p in predictions where p >= 0 { counts[p, default: 0] += 1 }
        recent.append(counts)
        if recent.count > policy.window { recent.removeFirst() }
        guard recent.count == policy.window else { return nil }
        var total: [Int: Int] = [:]
        for batch in recent { for (c, n) in batch { total[c, default: 0] += n } }
        let all = total.values.reduce(0, +)
        guard all > 0 else { return nil }
        // The most predicted class; the smallest index on ties.
        let top = total.max { ($0.value, -$0.key) < ($1.value, -$1.key) }!
        let share = Double(top.value) / Double(all)
        defer { collapsed = share >= policy.threshold }
        return share >= policy.threshold && !collapsed ? (top.key, share) : nil
    }

    /// What is wrong with a window read from a file, as "field: what was expected", or nil: at most
    /// `policy.window` batches, each counting at most `batchLimit` predictions of classes 0 or more.
    public func problem(batchLimit: Int) -> String? {
        guard recent.count <= policy.window else {
            return "monitor.recent holds \(recent.count) batches; the collapse window (monitor.policy.window) is \(policy.window)"
        }
        for (b, counts) in recent.enumerated() {
            if let bad = counts.first(where: { $0.key < 0 || $0.value < 0 }) {
                return "monitor.recent[\(b)] counts \(bad.value) predictions of class \(bad.key); expected classes and counts of 0 or more"
            }
            // Summed saturating, so that hostile counts cannot overflow.
            let total = counts.values.reduce(0) { let (s, overflow) = $0.addingReportingOverflow($1); return overflow ? Int.max : s }
            guard total <= batchLimit, total < Int.max else {
                return "monitor.recent[\(b)] counts more predictions than a batch holds (\(batchLimit))"
            }
        }
        return nil
    }

    /// Empties the window (after a reset to the source).
    public mutating func clear() {
        recent = []
        collapsed = false
    }
}
