import TTAAdaptation
import TTAAugment
import TTAModels
import TTATensor

/// Builds registered methods with the runtime's pieces wired in (CoTTA's augmentation pipeline, for
/// CoTTA and RoTTA; its ROID variant).
public enum MethodFactory {
    /// The method `name` for images of `imageSize` pixels (the augmentation canvas follows it).
    /// `sourceBatches`: source-domain images, for the methods that need them (EATA's Fisher information);
    /// `sourceLabels`, `cache` and `sourceSeed` as in `MethodRegistry.make` (RMT).
    public static func make(_ name: String, configuration: MethodConfiguration, imageSize: Int,
                            sourceBatches: [Tensor] = [], sourceLabels: [[Int]] = [], cache: PreparationCache? = nil,
                            sourceSeed: UInt64 = 0) throws -> any AdaptationMethod {
        // ROID's consistency loss (also under UnMix-TNS) uses the variant without blur and noise, on a
        // reflect-padded canvas.
        let aug = MethodRegistry.baseName(name) == "roid" ? CoTTAAugmentation.roid(imageSize: imageSize) : CoTTAAugmentation(imageSize: imageSize)
        let augment: BatchAugmentation = { x, g in aug(x, using: &g) }
        // The side the pipeline was built for goes with it: an augmenting method refuses a batch of another size
        // before any work rather than stopping the process in the pipeline.
        return try MethodRegistry.make(name, configuration: configuration, augment: augment, sourceBatches: sourceBatches,
                                       sourceLabels: sourceLabels, cache: cache, sourceSeed: sourceSeed, augmentImageSize: imageSize)
    }
}
