import TTATensor

/// What a forward pass should keep for backward.
public struct ForwardContext: Sendable, Equatable {
    /// Keep the activations backward reads. Off for prediction-only passes (teachers, anchors, `source`).
    public var recording: Bool
    public init(recording: Bool) { self.recording = recording }
    public static let inference = ForwardContext(recording: false)
    public static let training = ForwardContext(recording: true)
}

/// A layer or a composition of layers with a forward pass and a hand-written backward pass.
///
/// `backward` must follow a `forward` made with `recording: true`. It **accumulates** the gradients
/// of the layer's trainable parameters into the store's gradient arena and returns `∂L/∂x` when
/// `needInputGradient` (nil otherwise). Gradients of parameters that are not trainable are not computed.
public protocol Module: AnyObject {
    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor
    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor?
}

/// Layers applied one after the other; backward walks them in reverse.
public final class Sequential: Module {
    public let layers: [Module]
    public init(_ layers: [Module]) { self.layers = layers }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        layers.reduce(x) { $1.forward($0, ctx) }
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        var g = dy
        for (i, layer) in layers.enumerated().reversed() {
            guard let next = layer.backward(g, needInputGradient: needInputGradient || i > 0) else { return nil }
            g = next
        }
        return g
    }
}
