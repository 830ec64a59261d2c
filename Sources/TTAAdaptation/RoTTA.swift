import Foundation
import TTAModels
import TTANN
import TTATensor

/// RoTTA (Yuan et al., CVPR 2023, arXiv 2303.13899): robust BN, a category-balanced memory of test
/// images, and a mean teacher trained on that memory.
///
/// Every BN becomes a robust BN (`BatchNormMode.robust`): in train mode it normalises with
/// `(1−α)·running + α·batch` statistics (biased variance) and keeps them as its new running statistics;
/// in eval mode it uses the running statistics. Only the BN affine parameters train.
///
/// Per batch: the teacher in eval mode gives logits `t` (the output); each image enters the memory
/// (`CSTUMemory`) with its pseudo-label `argmax t` and uncertainty `−Σ p·log(p + 1e-6)`. After every
/// `rottaUpdateFrequency`-th image inserted (counted across batches, possibly mid-batch), one update:
/// student and teacher in train mode, the student on the strong (CoTTA) augmentation of the memory, the
/// teacher on the memory itself; loss `mean_i w_i·CE(student_i, softmax(teacher_i))` with the timeliness
/// weight `w = e^(−a)/(1 + e^(−a))`, `a = age/capacity`; an optimizer step, then the teacher EMA
/// `θ′ ← (1−ν)·θ′ + ν·θ` over every parameter.
///
/// Works at any batch size, 1 included (the update's batch is the memory).
///
/// Under a sliding window (`Adaptor.windowLength`), the predictions between updates are the reference's
/// `forward_sliding_window`: the student on the new image alone (its robust BNs are not BatchNorm layers, so the
/// reference's `has_bn` is false), in the mode the student was left in. The fresh robust BNs start in train mode,
/// each step sets eval, and an update leaves train (`studentInTrainMode`); in train mode a prediction normalises
/// with the robust mix of the running and the image's statistics and keeps the mix as the running statistics.
/// And, a quirk of the reference reproduced: its memory keeps views of the window's buffer, which is written in place,
/// so an image the memory took at a window step is whatever that slot of the buffer holds at the next update
/// (`CSTUMemory.Item.windowSlot`).
public final class RoTTAMethod: AugmentingMethod {
    public let name = "rotta"
    /// The teacher: copies of the model.
    public var copiesTheModel: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// The strong augmentation of the memory batch (CoTTA's pipeline in the reference); nil uses the images as they are.
    public let augment: BatchAugmentation?
    public let augmentImageSize: Int?   // see `AugmentingMethod`
    /// The category-balanced memory.
    public private(set) var memory: CSTUMemory
    /// Images inserted since the last reset (the reference's `current_instance`).
    public private(set) var insertedSamples = 0
    /// The mean teacher (robust BN, same parameters as the student at first).
    public private(set) var teacher: (any ImageClassifier)?
    /// Whether the reference's student would be in train mode: true after `configure` (fresh robust BN modules) and
    /// after a step that updated, false after one that did not. Read only by the sliding window's predictions.
    public private(set) var studentInTrainMode = true
    public var predictsWithTheWindow: Bool { false }
    /// Whether the current steps are on the adaptor's window buffer (`stepsOnTheWindow`).
    private var onTheWindow = false
    /// Whether the memory probe runs (`setMemoryProbe`): every step then ends in an update on a full memory.
    private var memoryProbe = false

    private var update: GradientUpdate?
    private var sourceState: ParameterStore.Snapshot?
    /// The model's input channels and required image size (a ViT's), to check a restored memory's images.
    private var imageChannels = 1
    private var requiredImageSize: (height: Int, width: Int)?
    /// The shape `(C, H, W)` of the images in the memory: that of the last batch, or of a restored state's memory
    /// (nil before the first batch, after a reset, and after restoring a state that does not say).
    private var memoryImageShape: [Int]?

    public init(_ configuration: MethodConfiguration, augment: BatchAugmentation?, augmentImageSize: Int? = nil) {
        self.configuration = configuration
        self.augment = augment
        self.augmentImageSize = augmentImageSize
        steps = configuration.steps
        memory = CSTUMemory(configuration, numClasses: 1)
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.runningStatistics)
        model.store.setTrainable(.normAffine)
        update = GradientUpdate(configuration.makeOptimizer(model.store))
        teacher = model.copy()
        sourceState = model.store.snapshot()
        memory = CSTUMemory(configuration, numClasses: model.numClasses)
        (imageChannels, requiredImageSize) = (model.inputChannels, model.requiredImageSize)
        studentInTrainMode = true
    }

    /// The memory's images are stacked into one batch at each update: a batch whose images are of another shape than
    /// those already in the memory (from earlier batches or a restored state) is refused, as is one the augmentation
    /// cannot take (`checkAugmentable`).
    public func checkBatch(shape: [Int]) throws {
        try checkAugmentable(shape: shape)
        guard let stored = memory.classes.first(where: { !$0.isEmpty })?.first?.image.count else { return }
        let image = Array(shape.dropFirst())
        if let memoryImageShape, memoryImageShape != image {
            throw AdaptationError("rotta: the batch has shape \(shape); its memory holds images of shape \(memoryImageShape) (from earlier "
                                  + "batches or a restored state), and an update stacks them into one batch")
        }
        if image.reduce(1, *) != stored {
            throw AdaptationError("rotta: the batch has shape \(shape); its memory holds images of \(stored) values (from earlier "
                                  + "batches or a restored state), and an update stacks them into one batch")
        }
    }

    public func stepsOnTheWindow(_ on: Bool) { onTheWindow = on }

    /// An update comes every `rottaUpdateFrequency` images and takes the whole memory, whatever the batch size: a
    /// probe step on a few images would see neither. While the probe runs, a step without an update ends in one on
    /// `rottaMemorySize` images (the batch's, repeated), what an update on a full memory costs.
    public func setMemoryProbe(_ on: Bool) { memoryProbe = on }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let update, let teacher else { throw AdaptationError("rotta: step before configure") }
        studentInTrainMode = false
        // The window's buffer now holds this step's images: the memory's views of it see them.
        if onTheWindow { memory.refreshWindowImages(from: x) }
        let logits = timer.measure(.forward) {
            teacher.setBatchNormMode(.runningStatistics)
            return teacher.forward(x, .inference)
        }
        let probs = logits.softmaxRows()
        let labels = logits.argmaxRows()
        let (c, imageSize, imageShape) = (logits.shape[1], x.count / x.shape[0], Array(x.shape.dropFirst()))
        func image(_ i: Int) -> [Float] { Array(x.storage[(i * imageSize)..<((i + 1) * imageSize)]) }
        memoryImageShape = imageShape
        var updated = false
        for i in 0..<x.shape[0] {
            let p = probs.storage[(i * c)..<((i + 1) * c)]
            let uncertainty = p.reduce(0.0) { $0 - Double($1) * Foundation.log(Double($1) + 1e-6) }
            memory.add(image(i), label: labels[i], uncertainty: uncertainty, windowSlot: onTheWindow ? i : nil)
            insertedSamples += 1
            if insertedSamples % configuration.rottaUpdateFrequency == 0 {
                let (images, ages) = memory.contents()
                adapt(on: images, ages: ages, imageShape: imageShape, model: model, teacher: teacher, update: update, rng: &rng, timer: &timer)
                updated = true
            }
        }
        if memoryProbe && !updated {
            let full = (0..<memory.capacity).map { image($0 % x.shape[0]) }
            adapt(on: full, ages: Array(repeating: 0, count: full.count), imageShape: imageShape, model: model, teacher: teacher,
                  update: update, rng: &rng, timer: &timer)
        }
        return logits
    }

    /// The student's prediction, in train mode (`studentInTrainMode`) with its robust BNs mixing in `x`'s statistics.
    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor {
        guard studentInTrainMode else { return model.forward(x, .inference) }
        model.setBatchNormMode(.robust(alpha: configuration.rottaAlpha))
        defer { model.setBatchNormMode(.runningStatistics) }
        return model.forward(x, .inference)
    }

    /// One update on the memory's images and their ages (`CSTUMemory.contents`).
    private func adapt(on images: [[Float]], ages: [Double], imageShape: [Int], model: any ImageClassifier, teacher: any ImageClassifier,
                       update: GradientUpdate, rng: inout SeededGenerator, timer: inout PhaseTimer) {
        studentInTrainMode = true   // the reference's loss_calculation sets train mode first, and leaves it
        guard !images.isEmpty else { return }
        let batch = Tensor(shape: [images.count] + imageShape, storage: Array(images.joined()))
        let strong = augment.map { $0(batch, &rng) } ?? batch
        model.setBatchNormMode(.robust(alpha: configuration.rottaAlpha))
        teacher.setBatchNormMode(.robust(alpha: configuration.rottaAlpha))
        let (targets, student) = timer.measure(.forward) {
            (teacher.forward(batch, .inference).softmaxRows(), model.forward(strong, .training))
        }
        var gradient = Loss.softCrossEntropy(student, targets: targets).gradient
        let c = student.shape[1]
        for (i, a) in ages.enumerated() {
            let w = Float(Foundation.exp(-a) / (1 + Foundation.exp(-a)))
            for k in 0..<c { gradient.storage[i * c + k] *= w }
        }
        update.apply(gradient, model: model, timer: &timer)
        timer.measure(.update) { updateMeanTeacher(teacher.store, from: model.store, momentum: 1 - configuration.rottaNu) }
        model.setBatchNormMode(.runningStatistics)
    }

    public func reset() {
        update?.optimizer.reset()
        if let sourceState { teacher?.store.restore(sourceState) }
        memory.removeAll()
        memoryImageShape = nil
        insertedSamples = 0
        // `studentInTrainMode` stays: the reference's reset loads the state dicts, which keeps the modules' modes.
    }

    /// Optimizer, teacher, the memory's items (per class: images, uncertainties, ages, and window slots, −1 for none,
    /// where any item has one), their shape `(C, H, W)`, the insert count and the student's mode.
    public func captureState() -> MethodState {
        var s = MethodState()
        if let update { s.store(update.optimizer.state, as: "optimizer") }
        if let teacher { s.store(teacher.store, as: "teacher") }
        for (k, items) in memory.classes.enumerated() where !items.isEmpty {
            s.tensors["memory.\(k).images"] = Array(items.map(\.image).joined())
            s.numbers["memory.\(k).uncertainty"] = items.map(\.uncertainty)
            s.numbers["memory.\(k).age"] = items.map { Double($0.age) }
            if items.contains(where: { $0.windowSlot != nil }) {
                s.numbers["memory.\(k).windowSlot"] = items.map { Double($0.windowSlot ?? -1) }
            }
        }
        if let memoryImageShape { s.numbers["memory.imageShape"] = memoryImageShape.map(Double.init) }
        s.numbers["insertedSamples"] = [Double(insertedSamples)]
        s.numbers["studentInTrainMode"] = [studentInTrainMode ? 1 : 0]
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let update, let teacher else { throw AdaptationError("rotta: state restored before configure") }
        // The memory first, checked whole, so that a bad one changes nothing. Errors name tensors with the prefix of
        // where they are stored (`keyPrefix`) and numbers by their key, as `MethodState.count` does.
        var classes = [[CSTUMemory.Item]](repeating: [], count: memory.numClasses)
        var imageSize: (values: Int, key: String)?
        // The images' shape (C, H, W): the model's C (and required H×W); when absent, the values per image say less.
        var shape: [Int]?
        if let saved = state.numbers["memory.imageShape"] {
            let dims = saved.allSatisfy { $0 >= 1 && $0 == $0.rounded() && $0 < 1_048_576 } ? saved.map { Int($0) } : []
            guard dims.count == 3, dims[0] == imageChannels, requiredImageSize.map({ dims[1] == $0.height && dims[2] == $0.width }) ?? true else {
                throw AdaptationError("rotta: state 'memory.imageShape' is \(saved); expected the (C, H, W) of the memory's "
                                      + "images, with C = \(imageChannels)"
                                      + (requiredImageSize.map { " and H×W = \($0.height)×\($0.width)" } ?? ""))
            }
            shape = dims
            imageSize = (dims.reduce(1, *), "memory.imageShape")
        }
        for k in classes.indices {
            let (uKey, aKey, iKey) = ("memory.\(k).uncertainty", "memory.\(k).age", "memory.\(k).images")
            let u = state.numbers[uKey] ?? [], a = state.numbers[aKey] ?? []
            let images = state.tensors[iKey] ?? []
            guard u.count == a.count else {
                throw AdaptationError("rotta: state '\(aKey)' has \(a.count) values and '\(uKey)' "
                                      + "\(u.count); expected one age and one uncertainty per memory image")
            }
            if let bad = a.first(where: { !($0 >= 0 && $0 == $0.rounded() && $0 < 9.0e15) }) {
                throw AdaptationError("rotta: state '\(aKey)' holds \(bad); expected ages that are non-negative whole counts")
            }
            if let bad = u.first(where: { !$0.isFinite }) {
                throw AdaptationError("rotta: state '\(uKey)' holds \(bad); expected finite uncertainties")
            }
            let sKey = "memory.\(k).windowSlot"
            let slots = state.numbers[sKey] ?? Array(repeating: -1, count: u.count)
            guard slots.count == u.count else {
                throw AdaptationError("rotta: state '\(sKey)' has \(slots.count) values and '\(uKey)' \(u.count); expected one "
                                      + "window slot (or −1) per memory image")
            }
            if let bad = slots.first(where: { !($0 >= -1 && $0 == $0.rounded() && $0 < 1_048_576) }) {
                throw AdaptationError("rotta: state '\(sKey)' holds \(bad); expected window slots (whole, from 0) or −1 for none")
            }
            if u.isEmpty && images.isEmpty { continue }
            // Every memory image holds C·H·W values of the model's C (and its required H×W), the same for all.
            let size = u.isEmpty ? 0 : images.count / u.count
            let modelSize = requiredImageSize.map { imageChannels * $0.height * $0.width }
            let fits = size > 0 && size * u.count == images.count && size % imageChannels == 0 && (modelSize == nil || modelSize == size)
            guard fits, imageSize.map({ $0.values == size }) ?? true else {
                let expected: String
                if let shape {
                    expected = "\(shape[0])·\(shape[1])·\(shape[2]) = \(shape.reduce(1, *)) values each, as 'memory.imageShape' says"
                } else if let (h, w) = requiredImageSize {
                    expected = "\(imageChannels)·\(h)·\(w) = \(imageChannels * h * w) values each"
                } else if let imageSize {
                    expected = "\(imageSize.values) values each, as in '\(imageSize.key)'"
                } else {
                    expected = "C·H·W values each (C = \(imageChannels))"
                }
                throw AdaptationError("rotta: state '\(state.keyPrefix)\(iKey)' holds \(images.count) values for \(u.count) memory image(s); "
                                      + "expected images of \(expected)")
            }
            imageSize = imageSize ?? (size, iKey)
            classes[k] = u.indices.map { j in
                CSTUMemory.Item(image: Array(images[(j * size)..<((j + 1) * size)]), uncertainty: u[j], age: Int(a[j]),
                                windowSlot: slots[j] < 0 ? nil : Int(slots[j]))
            }
        }
        let total = classes.reduce(0) { $0 + $1.count }
        guard total <= memory.capacity else {
            throw AdaptationError("rotta: the saved memory holds \(total) images; its capacity (rotta-memory-size) is \(memory.capacity)")
        }
        let inserted = try state.count("insertedSamples", of: name)
        // States saved before the student's mode was kept: train mode only before the first step (see `predict`).
        let trainMode = state.numbers["studentInTrainMode"] ?? [inserted == 0 ? 1 : 0]
        guard trainMode == [0] || trainMode == [1] else {
            throw AdaptationError("rotta: state 'studentInTrainMode' is \(trainMode); expected [0] or [1]")
        }
        try state.restore(update.optimizer, from: "optimizer", of: name)
        try state.restore(teacher.store, from: "teacher", of: name)
        memory.restore(classes: classes)
        memoryImageShape = shape
        insertedSamples = inserted
        studentInTrainMode = trainMode == [1]
    }
}

/// RoTTA's category-balanced sampling with timeliness and uncertainty (CSTU): at most `capacity` images,
/// `capacity / C` per predicted class, the stalest and least certain evicted first.
///
/// An item's score is `λ_t / (1 + e^(−age/capacity)) + λ_u·uncertainty/ln C` (higher is worse). A new
/// image (age 0) of class k is added when k has room (fewer than `capacity/C` items) and the memory is not
/// full; when k has room but the memory is full, the worst item of the fullest classes is evicted if it
/// scores higher than the new image, else the image is dropped; when k is full, the same within k. After
/// every insertion attempt every stored item ages by one, the new one included.
public struct CSTUMemory: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        public var image: [Float]
        public var uncertainty: Double
        public var age: Int
        /// The slot of the adaptor's window buffer the image was taken from at a window step, nil for a batch's image.
        /// The reference's memory holds views of that buffer, written in place: at each window step the image becomes
        /// what the slot holds (`refreshWindowImages`).
        public var windowSlot: Int?

        public init(image: [Float], uncertainty: Double, age: Int, windowSlot: Int? = nil) {
            (self.image, self.uncertainty, self.age, self.windowSlot) = (image, uncertainty, age, windowSlot)
        }
    }

    public let capacity: Int
    public let numClasses: Int
    public let lambdaT: Double, lambdaU: Double
    /// Items per class, in insertion order.
    public private(set) var classes: [[Item]]

    public init(_ configuration: MethodConfiguration, numClasses: Int) {
        capacity = configuration.rottaMemorySize
        self.numClasses = numClasses
        (lambdaT, lambdaU) = (Double(configuration.rottaLambdaT), Double(configuration.rottaLambdaU))
        classes = Array(repeating: [], count: numClasses)
    }

    public var count: Int { classes.reduce(0) { $0 + $1.count } }

    /// Replaces the items (from a captured state); the class count must match.
    mutating func restore(classes items: [[Item]]) {
        precondition(items.count == numClasses)
        classes = items
    }

    public func score(age: Int, uncertainty: Double) -> Double {
        lambdaT / (1 + Foundation.exp(-Double(age) / Double(capacity))) + lambdaU * uncertainty / Foundation.log(Double(numClasses))
    }

    public mutating func add(_ image: [Float], label: Int, uncertainty: Double, windowSlot: Int? = nil) {
        precondition(classes.indices.contains(label), "CSTUMemory: class \(label) out of range")
        if makeRoom(for: label, score: score(age: 0, uncertainty: uncertainty)) {
            classes[label].append(Item(image: image, uncertainty: uncertainty, age: 0, windowSlot: windowSlot))
        }
        for k in classes.indices { for j in classes[k].indices { classes[k][j].age += 1 } }
    }

    /// The stored images (by class, then insertion order) and their ages divided by the capacity.
    public func contents() -> (images: [[Float]], ages: [Double]) {
        let items = classes.joined()
        return (items.map(\.image), items.map { Double($0.age) / Double(capacity) })
    }

    /// Sets every image taken from the window's buffer to what its slot of `buffer` `(W, C, H, W′)` holds now.
    public mutating func refreshWindowImages(from buffer: Tensor) {
        let size = buffer.count / max(1, buffer.shape[0])
        for k in classes.indices {
            for j in classes[k].indices {
                guard let slot = classes[k][j].windowSlot, slot < buffer.shape[0], classes[k][j].image.count == size else { continue }
                classes[k][j].image = Array(buffer.storage[(slot * size)..<((slot + 1) * size)])
            }
        }
    }

    public mutating func removeAll() {
        classes = Array(repeating: [], count: numClasses)
    }

    /// Whether an item of class `label` with `score` may be added, after evicting one if needed.
    private mutating func makeRoom(for label: Int, score: Double) -> Bool {
        let perClass = Double(capacity) / Double(numClasses)
        if Double(classes[label].count) < perClass {
            if count < capacity { return true }
            let most = classes.map(\.count).max()!
            return evictWorst(among: classes.indices.filter { classes[$0].count == most }, ifWorseThan: score)
        }
        return evictWorst(among: [label], ifWorseThan: score)
    }

    /// Evicts the highest-scoring item of `candidates` (the last one on ties) if it scores above `score`.
    private mutating func evictWorst(among candidates: [Int], ifWorseThan score: Double) -> Bool {
        var worst: (k: Int, j: Int, score: Double)?
        for k in candidates {
            for (j, item) in classes[k].enumerated() {
                let s = self.score(age: item.age, uncertainty: item.uncertainty)
                if worst == nil || s >= worst!.score { worst = (k, j, s) }
            }
        }
        guard let worst else { return true }
        guard worst.score > score else { return false }
        classes[worst.k].remove(at: worst.j)
        return true
    }
}
