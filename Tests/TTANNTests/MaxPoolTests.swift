import Testing
import TTAKernels
import TTANN
import TTATensor
import TTATestSupport

/// `MaxPool2d` (ResNet-50's stem pool) against PyTorch, its reference twin and finite differences.
@Suite struct MaxPoolTests {
    /// Golden: `maxpool_cases()` in scripts/make_cnn_fixtures.py (`F.max_pool2d`, float64).
    @Test(arguments: [("k3s2p1", 3, 2, 1), ("k2s2p0", 2, 2, 0)])
    func matchesPyTorch(_ c: (String, Int, Int, Int)) throws {
        let f = try fixture("cnn/maxpool.safetensors")
        let pool = MaxPool2d(kernelSize: c.1, stride: c.2, padding: c.3)
        let y = pool.forward(try f.tensor("\(c.0).x"), .training)
        expectClose(y, try f.tensor("\(c.0).y"), "\(c.0) y")
        #expect(y.shape == (try f.tensor("\(c.0).y")).shape)
        expectClose(pool.backward(try f.tensor("\(c.0).dy"), needInputGradient: true)!, try f.tensor("\(c.0).dx"), "\(c.0) dx")
    }

    /// Ties (post-ReLU zeros, repeated values) go to the first element in window order, in the fast
    /// kernel and its reference twin alike, at any thread count.
    @Test(arguments: [1, 3])
    func kernelMatchesReferenceWithTies(_ threads: Int) {
        let g = MaxPool2dGeometry(rows: 6, h: 11, w: 10, kernel: 3, stride: 2, padding: 1)
        let x = randomFloats(g.rows * g.h * g.w, seed: 3).map { max(($0 * 2).rounded() / 2, 0) }   // many equal values
        let dy = randomFloats(g.rows * g.ho * g.wo, seed: 4)
        var yRef = [Float](repeating: .nan, count: dy.count), dxRef = [Float](repeating: 0.5, count: x.count)
        maxPool2dReference(x: x, dy: dy, y: &yRef, dx: &dxRef, g)
        withKernelThreads(threads) {
            var y = [Float](repeating: .nan, count: dy.count), dx = [Float](repeating: 0.5, count: x.count)
            var argmax = [Int32](repeating: -1, count: dy.count)
            maxPool2dForward(x: x, y: &y, argmax: &argmax, g)
            maxPool2dBackward(dy: dy, argmax: argmax, dx: &dx, g)
            #expect(y == yRef)
            #expect(dx == dxRef)
        }
    }

    @Test func inputGradientMatchesFiniteDifferences() {
        let shape = [2, 3, 7, 6]
        let pool = MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        let x = randomFloats(shape.product, seed: 5)
        let yShape = pool.forward(Tensor(shape: shape, storage: x), .training).shape
        let r = randomFloats(yShape.product, seed: 6)
        let dx = pool.backward(Tensor(shape: yShape, storage: r), needInputGradient: true)!
        let err = finiteDifferenceError(at: x, analytic: dx.storage, samples: 60, step: 1e-3) {
            weightedSum(pool.forward(Tensor(shape: shape, storage: $0), .inference).storage, r)
        }
        #expect(err < 5e-3, "max-pool input gradient FD error \(err)")
    }
}
