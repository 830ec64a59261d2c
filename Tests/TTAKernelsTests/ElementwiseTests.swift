import Testing
import TTATensor
import TTAKernels

/// The ReLU kernels that keep a byte mask instead of the output, against their definitions
/// (`max(x, 0)`; the gradient passes where the output is positive: 0 at x = 0, as PyTorch).
@Suite struct ReLUMaskTests {
    @Test(arguments: [1, 7, 8, 37, 1024 + 5])
    func maskKernelsMatchTheDefinition(_ count: Int) {
        var g = SeededGenerator(seed: UInt64(count))
        // A third negative, a sixth exactly ±0, the rest positive; the gradient anything.
        let x: [Float] = (0..<count).map { i in
            switch i % 6 { case 0: -0.0; case 1: 0; case 2, 3: -Float(g.nextUniform()) - 1e-3; default: Float(g.nextUniform()) + 1e-3 }
        }
        let dy: [Float] = (0..<count).map { _ in Float(g.nextUniform()) * 2 - 1 }
        var y = [Float](repeating: .nan, count: count), mask = [UInt8](repeating: 7, count: count), dx = [Float](repeating: .nan, count: count)
        reluForward(x: x, y: &y, mask: &mask, count: count)
        reluBackward(dy: dy, mask: mask, dx: &dx, count: count)
        #expect(y == x.map { max($0, 0) })
        #expect(mask == x.map { $0 > 0 ? 1 : 0 })
        #expect(dx == zip(dy, x).map { $1 > 0 ? $0 : 0 })
        var plain = [Float](repeating: .nan, count: count)
        reluForward(x: x, y: &plain, count: count)
        #expect(plain == y)
        // NaN propagates forward (as PyTorch's relu) and gets no gradient, in the vector body and the tail.
        var withNaN = x
        for i in stride(from: 4, to: count, by: 7) { withNaN[i] = .nan }
        reluForward(x: withNaN, y: &y, mask: &mask, count: count)
        #expect(zip(withNaN, y).allSatisfy { $0.isNaN ? $1.isNaN : $1 == max($0, 0) })
        #expect(mask == withNaN.map { $0 > 0 ? 1 : 0 })
    }
}
