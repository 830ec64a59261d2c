import Testing
import TTAAdaptation
import TTAAugment
import TTARuntime
import TTATensor

/// What `MethodFactory` wires into the methods it builds.
@Suite struct MethodFactoryTests {
    /// ROID draws its consistency view from ROID's variant of the CoTTA pipeline (no blur, no noise,
    /// reflect padding), alone and under UnMix-TNS, as the reference's `with_unmix_tns(run_roid)` does;
    /// CoTTA draws from the full pipeline. (roid+unmix_tns used to get the full one.)
    @Test func roidAugmentsWithItsVariantAloneAndUnderUnMixTNS() throws {
        let x = Tensor(shape: [2, 3, 16, 16], storage: (0..<(2 * 3 * 16 * 16)).map { Float($0 % 97) / 97 })
        func draw(_ augment: BatchAugmentation?) throws -> [Float] {
            let augment = try #require(augment)
            var g = SeededGenerator(seed: 5)
            return augment(x, &g).storage
        }
        func pipeline(_ aug: CoTTAAugmentation) -> [Float] {
            var g = SeededGenerator(seed: 5)
            return aug(x, using: &g).storage
        }
        let config = MethodConfiguration.defaults(for: .cifar)
        let roid = try #require(try MethodFactory.make("roid", configuration: config, imageSize: 16) as? ROIDMethod)
        let hosted = try #require(try MethodFactory.make("roid+unmix_tns", configuration: config, imageSize: 16) as? UnMixTNSMethod)
        let hostedRoid = try #require(hosted.host as? ROIDMethod)
        let cotta = try #require(try MethodFactory.make("cotta", configuration: config, imageSize: 16) as? CoTTAMethod)

        let roidView = pipeline(.roid(imageSize: 16)), fullView = pipeline(CoTTAAugmentation(imageSize: 16))
        #expect(roidView != fullView)   // the two pipelines tell apart on this input
        #expect(try draw(roid.augment) == roidView)
        #expect(try draw(hostedRoid.augment) == roidView)
        #expect(try draw(cotta.augment) == fullView)
    }
}
