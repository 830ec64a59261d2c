import Foundation
import Testing
import TTAData
import TTATestSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Data files that would hang a reader, cost gigabytes or take hours, each refused up front with a `DataError` naming
/// the file (or the option) and what was expected.
@Suite struct HostileDataTests {
    static let imagenetc = fixturesDirectory.appendingPathComponent("imagenetc")

    /// A fresh temporary folder.
    static func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tta-hostile-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    // MARK: Devices and FIFOs

    /// `--source-data /dev/zero` (read as a CIFAR python batch), a CIFAR binary batch, and an image list (`--subset`) that
    /// is a device or a FIFO are refused before reading: `/dev/zero` never ends, a FIFO blocks until a writer comes.
    @Test func devicesAndFIFOsAreRefusedBeforeReading() throws {
        let device = URL(fileURLWithPath: "/dev/zero")
        let deviceRefusal = DataError(file: "/dev/zero", message: "is a device; expected a regular file")
        #expect(throws: deviceRefusal) { try SourceDataset.load("/dev/zero") }
        #expect(throws: deviceRefusal) { try SourceDataset.readCIFARBinary(device) }
        #expect(throws: deviceRefusal) { try CIFARPickle.readBatch(device) }
        #expect(throws: deviceRefusal) { try SHA256.hex(fileAt: device) }   // the input fingerprint would hash it without end
        #expect(throws: deviceRefusal) {
            try ImageFolderBenchmark(directory: Self.imagenetc, folderName: "ImageNet-C", corruptions: ["fog"], severities: [5], subset: .list(device))
        }

        let dir = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("data_batch_1.bin")
        try #require(mkfifo(fifo.path, 0o600) == 0, "mkfifo \(fifo.path)")
        let fifoRefusal = DataError(file: fifo.path, message: "is a special file; expected a regular file")
        #expect(throws: fifoRefusal) { try SourceDataset.readCIFARBinary(fifo) }
        #expect(throws: fifoRefusal) { try SourceDataset.load(dir.path) }   // the folder's data_batch_1.bin
        #expect(throws: fifoRefusal) { try SHA256.hex(fileAt: fifo) }
        #expect(throws: fifoRefusal) {
            try ImageFolderBenchmark(directory: Self.imagenetc, folderName: "ImageNet-C", corruptions: ["fog"], severities: [5], subset: .list(fifo))
        }
    }

    // MARK: JPEG frame headers

    /// A real 17×13 JPEG whose frame header (SOF0) claims `width` × `height`, and the offset of that header.
    static func claiming(width: Int, height: Int) throws -> (data: Data, sof: Int) {
        let original = [UInt8](try Data(contentsOf: fixturesDirectory.appendingPathComponent("jpeg/rgb420_q75_17x13.jpg")))
        guard let sof = (0..<(original.count - 1)).first(where: { original[$0] == 0xFF && original[$0 + 1] == 0xC0 }) else {
            throw DataError(file: "rgb420_q75_17x13.jpg", message: "no SOF0 marker")
        }
        var b = original
        (b[sof + 5], b[sof + 6]) = (UInt8(height >> 8), UInt8(height & 0xFF))
        (b[sof + 7], b[sof + 8]) = (UInt8(width >> 8), UInt8(width & 0xFF))
        return (Data(b), sof)
    }

    /// The decoder takes a pixel limit of its caller's: above it the frame header is refused, before anything is
    /// allocated; within it the same file goes on (and is found short at its scan).
    @Test func theDecoderRefusesAFrameOverItsCallersLimit() throws {
        let (big, sof) = try Self.claiming(width: 2000, height: 2000)
        #expect(throws: DataError(file: "big.jpg", key: "SOF0", keyKind: "segment",
                                  message: "image of 2000x2000 pixels exceeds the limit of 1048576 pixels (at byte \(sof))")) {
            try JPEGImage.decode(big, file: "big.jpg", maxPixelCount: 1 << 20)
        }
        let atScan = #expect(throws: DataError.self) { try JPEGImage.decode(big, file: "big.jpg", maxPixelCount: 1 << 22) }
        #expect(atScan?.key == "SOS")
    }

    /// `<root>/ImageNet-C/fog/5/n01440764/{a,b}.JPEG` holding `first` and `second`.
    static func imageFolder(first: Data, second: Data) throws -> (root: URL, files: [URL]) {
        let root = try temporaryFolder()
        let cls = root.appendingPathComponent("ImageNet-C/fog/5/n01440764", isDirectory: true)
        try FileManager.default.createDirectory(at: cls, withIntermediateDirectories: true)
        let files = [cls.appendingPathComponent("a.JPEG"), cls.appendingPathComponent("b.JPEG")]
        try first.write(to: files[0])
        try second.write(to: files[1])
        return (root, files)
    }

    /// A JPEG of a few hundred bytes claiming 16384×16384 (2^28 pixels, ~1.8 GB per decode; the first sample sets the
    /// benchmark's image size, which a stream batch multiplies) is refused at its frame header, naming the file, whether
    /// it is the first sample (when the benchmark is opened) or a later one (when it is read).
    @Test func imageFolderBenchmarksRefuseHugeFramesAtTheHeader() throws {
        #expect(ImageFolderBenchmark.maxImagePixels == 1024 * 1024)
        let (huge, sof) = try Self.claiming(width: 16384, height: 16384)
        let real = try Data(contentsOf: fixturesDirectory.appendingPathComponent("jpeg/rgb420_q75_17x13.jpg"))
        func refusal(_ file: URL) -> DataError {
            DataError(file: file.path, key: "SOF0", keyKind: "segment",
                      message: "image of 16384x16384 pixels exceeds the limit of 1048576 pixels (at byte \(sof))")
        }

        let (firstRoot, firstFiles) = try Self.imageFolder(first: huge, second: real)
        defer { try? FileManager.default.removeItem(at: firstRoot) }
        #expect(throws: refusal(firstFiles[0])) {
            try ImageFolderBenchmark(directory: firstRoot, folderName: "ImageNet-C", corruptions: ["fog"], severities: [5])
        }

        let (laterRoot, laterFiles) = try Self.imageFolder(first: real, second: huge)
        defer { try? FileManager.default.removeItem(at: laterRoot) }
        let b = try ImageFolderBenchmark(directory: laterRoot, folderName: "ImageNet-C", corruptions: ["fog"], severities: [5])
        #expect((b.imageHeight, b.imageWidth, b.samplesPerSeverity) == (13, 17, 2))
        #expect(throws: refusal(laterFiles[1])) { try b.images(corruption: "fog", severity: 5, indices: [0, 1]) }
    }

    // MARK: Dirichlet ordering

    static let tooManyClasses = "the Dirichlet ordering takes at most 1000 classes (ImageNet-C's), one chunk each, but the domain's labels go up "
        + "to 1000 (1001 classes); use a Dirichlet δ of 0 (each domain sorted by label)"

    /// The Dirichlet ordering keeps a list per (chunk, class) and draws a proportion per (class, chunk): with the 99,999
    /// labels a benchmark may hold that is 10^10 lists. Past ImageNet-C's 1000 classes it is refused, naming the option.
    @Test func dirichletOrderingRefusesMoreClassesThanImageNetC() throws {
        let labels = (0..<10_010).map { $0 % 1001 }   // 10 samples for each of the 1001 chunks: past the chunk-size check
        #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option", message: Self.tooManyClasses)) {
            try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: 1)
        }

        // The same through a stream over a CIFAR-10-C-layout folder of 1001 classes (1×1 grey images), domain named.
        let dir = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        try NPYFile.write(int64: Array(repeatElement(labels.map(Int64.init), count: 5).joined()), shape: [5 * labels.count],
                          to: dir.appendingPathComponent("labels.npy"))
        try NPYFile.write(uint8: [UInt8](repeating: 128, count: 5 * labels.count), shape: [5 * labels.count, 1, 1, 1],
                          to: dir.appendingPathComponent("fog.npy"))
        let benchmark = try CorruptionBenchmark(directory: dir)
        #expect(benchmark.numClasses == 1001)
        #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option", message: "domain fog5: " + Self.tooManyClasses)) {
            try BenchmarkStream(benchmark: benchmark, configuration: StreamConfiguration(setting: .correlated, corruptions: ["fog"], batchSize: 64,
                                                                                         dirichletDelta: 0.1))
        }
    }
}
