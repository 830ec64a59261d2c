import Foundation
import Testing
import TTATensor
@testable import TTAData

// Fixtures: small CIFAR-C-layout folders written at test time into a temporary directory
// (`CBFixture`). The numpy NCHW reference comes from Tests/Fixtures/stream/python_random.json,
// written by scripts/make_stream_fixtures.py (function `nchw_reference`).

/// A temporary parent directory holding a CIFAR-C-layout folder, removed when the value goes away.
final class CBFixture {
    let root: URL
    let folder: URL

    init(folderName: String = "CIFAR-10-C") throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("CBFixture-\(UUID().uuidString)")
        folder = root.appendingPathComponent(folderName, isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func url(_ name: String) -> URL { folder.appendingPathComponent(name) }
    func path(_ name: String) -> String { url(name).path }

    /// The pixel at (h, w, c) of file row `row` of corruption file number `ci` (a simple deterministic mix).
    static func pixel(ci: Int, row: Int, h: Int, w: Int, c: Int, width: Int, channels: Int) -> UInt8 {
        UInt8((ci * 41 + row * 13 + ((h * width + w) * channels + c) * 5) % 256)
    }

    /// The expected NCHW float image of a row: `pixel / 255`.
    static func expectedImage(ci: Int, row: Int, height: Int, width: Int, channels: Int) -> [Float] {
        var out: [Float] = []
        for c in 0..<channels {
            for h in 0..<height {
                for w in 0..<width {
                    out.append(Float(pixel(ci: ci, row: row, h: h, w: w, c: c, width: width, channels: channels)) / 255)
                }
            }
        }
        return out
    }

    /// Writes `<name>.npy` as uint8 (rows, h, w, c) with `pixel(ci:...)` values.
    func writeImages(_ name: String, ci: Int, rows: Int, height: Int = 2, width: Int = 3, channels: Int = 3) throws {
        var bytes = [UInt8](repeating: 0, count: rows * height * width * channels)
        var i = 0
        for r in 0..<rows {
            for h in 0..<height {
                for w in 0..<width {
                    for c in 0..<channels {
                        bytes[i] = Self.pixel(ci: ci, row: r, h: h, w: w, c: c, width: width, channels: channels)
                        i += 1
                    }
                }
            }
        }
        try NPYFile.write(uint8: bytes, shape: [rows, height, width, channels], to: url(name + ".npy"))
    }

    /// The label of row `i` of a severity block in the standard fixture.
    static func blockLabel(_ i: Int, classes: Int) -> Int { (i * 7 + 3) % classes }

    /// Writes `labels.npy` (uint8): the block labels `blockLabel(i)` repeated for 5 severities.
    func writeLabels(k: Int, classes: Int) throws {
        let block = (0..<k).map { UInt8(Self.blockLabel($0, classes: classes)) }
        try NPYFile.write(uint8: Array([[UInt8]](repeating: block, count: 5).joined()), shape: [5 * k], to: url("labels.npy"))
    }

    /// A complete benchmark: `corruptions` (file number = position), `k` rows per severity.
    @discardableResult
    static func make(_ corruptions: [String], k: Int, classes: Int = 4, height: Int = 2, width: Int = 3,
                     channels: Int = 3) throws -> CBFixture {
        let f = try CBFixture()
        try f.writeLabels(k: k, classes: classes)
        for (ci, name) in corruptions.enumerated() {
            try f.writeImages(name, ci: ci, rows: 5 * k, height: height, width: width, channels: channels)
        }
        return f
    }
}

/// Runs `body`, expecting a `DataError` whose `file` is `file` (when given), whose `key` is `key`
/// and whose description contains every string of `contains`.
@discardableResult
func expectBenchmarkError(file: String? = nil, key: String? = nil, contains: [String],
                          sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> DataError? {
    do {
        try body()
        Issue.record("expected a DataError containing \(contains), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as DataError {
        if let file {
            #expect(error.file == file, "error names the wrong file: \(error)", sourceLocation: sourceLocation)
        }
        #expect(error.key == key, "error names the wrong key: \(error)", sourceLocation: sourceLocation)
        for s in contains {
            #expect(error.description.contains(s), "\"\(error)\" does not contain \"\(s)\"", sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected a DataError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("CorruptionBenchmark")
struct CorruptionBenchmarkTests {
    static let three = ["gaussian_noise", "shot_noise", "impulse_noise"]

    @Test func standardAndExtraCorruptionLists() {
        #expect(CorruptionBenchmark.standardCorruptions == [
            "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression",
        ])
        #expect(CorruptionBenchmark.extraCorruptions == ["speckle_noise", "gaussian_blur", "spatter", "saturate"])
    }

    @Test func opensTheFolderItselfOrItsParent() throws {
        let f = try CBFixture.make(Self.three, k: 4, classes: 4)
        let direct = try CorruptionBenchmark(directory: f.folder)
        let viaParent = try CorruptionBenchmark(directory: f.root, folderName: "CIFAR-10-C")
        // folderName is ignored when the directory is the folder itself (no such child).
        let both = try CorruptionBenchmark(directory: f.folder, folderName: "CIFAR-10-C")
        for b in [direct, viaParent, both] {
            #expect(b.folder.standardizedFileURL.path == f.folder.standardizedFileURL.path)
            #expect(b.availableCorruptions == Self.three)
            #expect(b.imageHeight == 2 && b.imageWidth == 3 && b.imageChannels == 3)
            #expect(b.samplesPerSeverity == 4 && b.rowCount == 20)
            #expect(b.numClasses == 4)
            #expect(b.labelsRepeatAcrossSeverities)
        }
    }

    @Test func availableCorruptionsAreInCanonicalOrder() throws {
        let names = ["zz_custom", "saturate", "fog", "gaussian_noise", "aa_custom", "speckle_noise", "jpeg_compression"]
        let f = try CBFixture.make(names, k: 2, classes: 2)
        // Hidden AppleDouble files and non-.npy files are ignored.
        try Data([0, 1, 2]).write(to: f.url("._fog.npy"))
        try Data("x".utf8).write(to: f.url("README.txt"))
        let b = try CorruptionBenchmark(directory: f.folder)
        #expect(b.availableCorruptions == ["gaussian_noise", "fog", "jpeg_compression", "speckle_noise", "saturate",
                                           "aa_custom", "zz_custom"])
        // A requested subset is opened (and ordered) alone.
        let sub = try CorruptionBenchmark(directory: f.folder, corruptions: ["saturate", "fog"])
        #expect(sub.availableCorruptions == ["fog", "saturate"])
    }

    @Test func numClassesGivenOrInferred() throws {
        let f = try CBFixture.make(["fog"], k: 5, classes: 3)
        #expect(try CorruptionBenchmark(directory: f.folder).numClasses == 3)
        #expect(try CorruptionBenchmark(directory: f.folder, numClasses: 10).numClasses == 10)
    }

    // MARK: Validation errors

    @Test func missingDirectory() throws {
        let f = try CBFixture()
        let missing = f.root.appendingPathComponent("nope")
        expectBenchmarkError(file: missing.path, contains: ["directory does not exist"]) {
            _ = try CorruptionBenchmark(directory: missing)
        }
        try Data().write(to: f.url("plain"))
        expectBenchmarkError(file: f.path("plain"), contains: ["is not a directory"]) {
            _ = try CorruptionBenchmark(directory: f.url("plain"))
        }
    }

    @Test func parentWithoutTheNamedFolder() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        expectBenchmarkError(file: f.root.path, contains: ["has no folder 'CIFAR-100-C'", "sub-folders: CIFAR-10-C"]) {
            _ = try CorruptionBenchmark(directory: f.root, folderName: "CIFAR-100-C")
        }
    }

    @Test func missingLabels() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        // The parent without folderName: the error names the child that has labels.npy.
        expectBenchmarkError(file: f.root.path, contains: ["missing labels.npy", "sub-folders with labels.npy: CIFAR-10-C"]) {
            _ = try CorruptionBenchmark(directory: f.root)
        }
        try FileManager.default.removeItem(at: f.url("labels.npy"))
        expectBenchmarkError(file: f.folder.path, contains: ["missing labels.npy"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    @Test func missingRequestedCorruptionListsWhatIsThere() throws {
        let f = try CBFixture.make(["fog", "snow"], k: 2)
        expectBenchmarkError(file: f.path("frost.npy"),
                             contains: ["missing corruption file", "also missing: contrast", "the folder has: snow, fog"]) {
            _ = try CorruptionBenchmark(directory: f.folder, corruptions: ["fog", "frost", "contrast"])
        }
        expectBenchmarkError(file: f.folder.path, contains: ["list of corruptions to open is empty", "available: snow, fog"]) {
            _ = try CorruptionBenchmark(directory: f.folder, corruptions: [])
        }
    }

    @Test func noCorruptionFiles() throws {
        let f = try CBFixture()
        try f.writeLabels(k: 2, classes: 2)
        expectBenchmarkError(file: f.folder.path, contains: ["no corruption files"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    @Test func labelsMustBeOneDimensionalIntegers() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 10), shape: [10, 1], to: f.url("labels.npy"))
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["1-D integer array", "'|u1'", "[10, 1]"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try NPYFile.write(floats: [Float](repeating: 0, count: 10), shape: [10], to: f.url("labels.npy"))
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["1-D integer array", "'<f4'"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        // int64 labels are accepted.
        try NPYFile.write(int64: (0..<10).map { Int64($0 % 2) }, shape: [10], to: f.url("labels.npy"))
        #expect(try CorruptionBenchmark(directory: f.folder).numClasses == 2)
    }

    @Test func labelCountMustBeAMultipleOfFive() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 7), shape: [7], to: f.url("labels.npy"))
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["has 7 labels", "multiple of 5"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    @Test func labelValuesOutOfRange() throws {
        let f = try CBFixture.make(["fog"], k: 2, classes: 4)
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["label 3 at row 0 is out of range", "0..<3"]) {
            _ = try CorruptionBenchmark(directory: f.folder, numClasses: 3)
        }
        try NPYFile.write(int64: [0, 1, -1, 0, 1, 0, 1, 0, 1, 0], shape: [10], to: f.url("labels.npy"))
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["label -1 at row 2 is out of range", "non-negative"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["numClasses must be at least 1"]) {
            _ = try CorruptionBenchmark(directory: f.folder, numClasses: 0)
        }
    }

    @Test func imageFilesMustBeUInt8NHWC() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        try NPYFile.write(floats: [Float](repeating: 0, count: 10 * 2 * 2 * 3), shape: [10, 2, 2, 3], to: f.url("fog.npy"))
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["expected uint8 images of shape (N, H, W, C)", "'<f4'"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 10 * 4), shape: [10, 2, 2], to: f.url("fog.npy"))
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["C 1 or 3", "[10, 2, 2]"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 10 * 2 * 2 * 2), shape: [10, 2, 2, 2], to: f.url("fog.npy"))
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["C 1 or 3", "[10, 2, 2, 2]"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try NPYFile.write(uint8: [], shape: [10, 0, 2, 3], to: f.url("fog.npy"))
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["empty images"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    @Test func imageRowsMustBeAMultipleOfFiveAndMatchTheLabels() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        try f.writeImages("fog", ci: 0, rows: 9)
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["has 9 rows", "multiple of 5"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        try f.writeImages("fog", ci: 0, rows: 15)
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["has 15 rows but labels.npy has 10 labels"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    @Test func corruptionFilesMustShareOneShape() throws {
        let f = try CBFixture.make(["fog", "snow"], k: 2)
        try f.writeImages("snow", ci: 1, rows: 10, height: 3)
        // Files are validated in canonical order (snow before fog), so fog is compared against snow.
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["has shape [10, 2, 3, 3] but snow.npy has [10, 3, 3, 3]", "same shape"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
        // Not requesting the odd file avoids the error.
        #expect(try CorruptionBenchmark(directory: f.folder, corruptions: ["fog"]).availableCorruptions == ["fog"])
    }

    @Test func unreadableNPYNamesTheFile() throws {
        let f = try CBFixture.make(["fog"], k: 2)
        try Data("not numpy at all".utf8).write(to: f.url("fog.npy"))
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["not an .npy file"]) {
            _ = try CorruptionBenchmark(directory: f.folder)
        }
    }

    // MARK: Reading

    @Test func severityBlocksAndRows() throws {
        let k = 6
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        let b = try CorruptionBenchmark(directory: f.folder)
        for (ci, name) in Self.three.enumerated() {
            for severity in 1...5 {
                let indices = [0, 5, 2, 3, 3, 4]  // unordered, a repeat, a consecutive run
                let t = try b.images(corruption: name, severity: severity, indices: indices)
                #expect(t.shape == [indices.count, 3, 2, 3])
                let expected = indices.flatMap {
                    CBFixture.expectedImage(ci: ci, row: (severity - 1) * k + $0, height: 2, width: 3, channels: 3)
                }
                #expect(t.storage == expected, "\(name) severity \(severity)")
                let labels = try b.labels(severity: severity, indices: indices)
                #expect(labels == indices.map { CBFixture.blockLabel($0, classes: 4) })
            }
        }
        let range = try b.images(corruption: "shot_noise", severity: 2, range: 1..<4)
        #expect(range == (try b.images(corruption: "shot_noise", severity: 2, indices: [1, 2, 3])))
        #expect(try b.images(corruption: "gaussian_noise", severity: 1, indices: []).shape == [0, 3, 2, 3])
        #expect(try b.labels(indices: [1, 2]) == [CBFixture.blockLabel(1, classes: 4), CBFixture.blockLabel(2, classes: 4)])
    }

    @Test func labelsAreRowAligned() throws {
        // Labels that differ between severity blocks are read row for row.
        let f = try CBFixture.make(["fog"], k: 2, classes: 2)
        try NPYFile.write(uint8: [0, 1, 1, 0, 0, 0, 1, 1, 0, 1], shape: [10], to: f.url("labels.npy"))
        let b = try CorruptionBenchmark(directory: f.folder)
        #expect(!b.labelsRepeatAcrossSeverities)
        #expect(try b.labels(severity: 1, indices: [0, 1]) == [0, 1])
        #expect(try b.labels(severity: 2, indices: [0, 1]) == [1, 0])
        #expect(try b.labels(severity: 4, indices: [0, 1]) == [1, 1])
    }

    @Test func greyscaleImages() throws {
        let f = try CBFixture.make(["fog"], k: 3, height: 4, width: 2, channels: 1)
        let b = try CorruptionBenchmark(directory: f.folder)
        #expect(b.imageChannels == 1)
        let t = try b.images(corruption: "fog", severity: 5, indices: [2])
        #expect(t.shape == [1, 1, 4, 2])
        #expect(t.storage == CBFixture.expectedImage(ci: 0, row: 14, height: 4, width: 2, channels: 1))
    }

    /// Data: `nchw_reference` of scripts/make_stream_fixtures.py (numpy's transpose + astype(float32) / 255).
    @Test func nchwConversionMatchesNumpyBitForBit() throws {
        let cases = try #require(StreamFixtures.section("nchw_reference") as? [[String: Any]])
        #expect(cases.count == 2)
        for c in cases {
            let shape = try #require((c["shape_nhwc"] as? [NSNumber])?.map(\.intValue))
            let bits = try #require((c["f32_bits"] as? [NSNumber])?.map(\.uint32Value))
            let (n, h, w, ch) = (shape[0], shape[1], shape[2], shape[3])
            let x = (0..<(n * h * w * ch)).map { UInt8(($0 * 37 + 11) % 256) }
            // Each severity block holds the reference array.
            let f = try CBFixture()
            try NPYFile.write(uint8: Array([[UInt8]](repeating: x, count: 5).joined()), shape: [5 * n, h, w, ch], to: f.url("fog.npy"))
            try NPYFile.write(uint8: [UInt8](repeating: 0, count: 5 * n), shape: [5 * n], to: f.url("labels.npy"))
            let b = try CorruptionBenchmark(directory: f.folder)
            for severity in [1, 3, 5] {
                let t = try b.images(corruption: "fog", severity: severity, indices: Array(0..<n))
                #expect(t.shape == [n, ch, h, w])
                #expect(t.storage.map(\.bitPattern) == bits, "shape \(shape) severity \(severity)")
            }
        }
    }

    @Test func readErrors() throws {
        let f = try CBFixture.make(["fog"], k: 3)
        let b = try CorruptionBenchmark(directory: f.folder)
        expectBenchmarkError(file: f.folder.path, key: "snow", contains: ["corruption 'snow'", "not available; available: fog"]) {
            _ = try b.images(corruption: "snow", severity: 1, indices: [0])
        }
        expectBenchmarkError(file: f.folder.path, contains: ["severity 6 is out of range", "1...5"]) {
            _ = try b.images(corruption: "fog", severity: 6, indices: [0])
        }
        expectBenchmarkError(file: f.folder.path, contains: ["severity 0 is out of range"]) {
            _ = try b.labels(severity: 0, indices: [0])
        }
        expectBenchmarkError(file: f.path("fog.npy"), contains: ["sample index 3 is out of range", "0..<3"]) {
            _ = try b.images(corruption: "fog", severity: 1, indices: [0, 3])
        }
        expectBenchmarkError(file: f.path("labels.npy"), contains: ["sample index -1 is out of range"]) {
            _ = try b.labels(indices: [-1])
        }
    }
}
