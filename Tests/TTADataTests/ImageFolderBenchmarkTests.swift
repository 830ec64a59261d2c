import Foundation
import Testing
import TTAData
import TTATensor
import TTATestSupport

/// The ImageNet-C-layout reader against torchvision's `ImageFolder(..., transform=ToTensor())` on a tiny
/// folder (2 corruptions x severities 1, 5 x 3 classes x 2 JPEGs, one class greyscale).
/// Golden: `imagenetc_folder()` in scripts/make_imagenetc_fixtures.py.
@Suite struct ImageFolderBenchmarkTests {
    static let root = fixturesDirectory.appendingPathComponent("imagenetc")

    func open(_ subset: ImageFolderBenchmark.Subset = .all, directory: URL = root, corruptions: [String]? = nil) throws -> ImageFolderBenchmark {
        try ImageFolderBenchmark(directory: directory, folderName: "ImageNet-C", corruptions: corruptions, severities: [1, 5], subset: subset)
    }

    @Test func readsWhatTorchvisionReads() throws {
        let b = try open()
        let expected = try fixture("imagenetc/expected.safetensors")
        #expect(b.availableCorruptions == ["gaussian_noise", "fog"])   // canonical order
        #expect(b.classes == ["n01440764", "n02102040", "n09468604"])
        #expect((b.imageHeight, b.imageWidth, b.numClasses, b.samplesPerSeverity) == (10, 12, 3, 6))
        #expect(Array(b.labels(ofSeverity: 5)) == (try expected.int64Values("labels")).map(Int.init))
        for c in b.availableCorruptions {
            for s in [1, 5] {
                var x = Tensor(shape: [6, 3, 10, 12])
                try x.withUnsafeMutableBufferPointer { try b.readImages(corruption: c, severity: s, indices: Array(0..<6), into: $0, firstSlot: 0) }
                // Pillow decodes these files exactly as JPEGImage does: equality up to float rounding.
                expectClose(x, try expected.tensor("\(c).\(s).x"), tolerance: 1e-7, "\(c)/\(s)")
            }
        }
    }

    @Test func listFileSetsOrderAndLabels() throws {
        let b = try open(.list(Self.root.appendingPathComponent("list.txt")))
        let expected = try fixture("imagenetc/expected.safetensors")
        #expect(b.samplesPerSeverity == 3)
        #expect(Array(b.labels(ofSeverity: 1)) == (try expected.int64Values("list_labels")).map(Int.init))
        var x = Tensor(shape: [3, 3, 10, 12])
        try x.withUnsafeMutableBufferPointer { try b.readImages(corruption: "fog", severity: 5, indices: [0, 1, 2], into: $0, firstSlot: 0) }
        expectClose(x, try expected.tensor("fog.5.list_x"), tolerance: 1e-7)
    }

    /// A stream over the folder: the engine's protocols work unchanged (reset_each_shift resets at each domain).
    @Test func streamsWithTheEngineProtocols() throws {
        let b = try open()
        let cfg = StreamConfiguration(setting: .reset_each_shift, corruptions: ["fog", "gaussian_noise"], severities: [5], batchSize: 4, order: .shuffled, seed: 1)
        let stream = try BenchmarkStream(benchmark: b, configuration: cfg)
        #expect(stream.batchCount == 4 && stream.totalSamples == 12)
        #expect((0..<4).map { stream.resetBefore(batch: $0) } == [true, false, true, false])
        let expected = try fixture("imagenetc/expected.safetensors").tensor("fog.5.x")
        let first = try #require(try stream.next())
        let order = BenchmarkStream.domainOrder(count: 6, take: nil, order: .shuffled, seed: 1)
        #expect(first.sampleIndex == Array(order.prefix(4)))
        for (slot, i) in first.sampleIndex.enumerated() {
            let n = 3 * 10 * 12
            expectClose(Array(first.images.storage[(slot * n)..<((slot + 1) * n)]), Array(expected.storage[(i * n)..<((i + 1) * n)]), tolerance: 1e-7)
        }
        let mixed = try BenchmarkStream(benchmark: b, configuration: StreamConfiguration(setting: .mixed_domains, corruptions: ["fog", "gaussian_noise"], batchSize: 5))
        #expect(mixed.totalSamples == 12 && Set(mixed.samples.map(\.domainIndex)) == [0, 1])
    }

    @Test func robustBenchSubsetIsTheReferenceList() throws {
        let list = ImageFolderBenchmark.robustBench5000
        #expect(list.count == 5000 && Set(list).count == 5000)
        #expect(list.first == "n09468604/ILSVRC2012_val_00015253.JPEG")
        #expect(list[1] == "n02823750/ILSVRC2012_val_00020685.JPEG")
        #expect(Set(list.map { $0.prefix(9) }).count == 997)
        // A partial folder cannot serve it: the error names a missing class folder.
        let e = try #require(throws: DataError.self) { try open(.robustBench5000) }
        #expect(e.message.contains("missing class folder") && e.message.contains("994 classes"))
    }

    // MARK: Bad input

    /// A scratch copy of the fixture folder, removed by the caller.
    func scratchCopy() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swifttta-inc-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: Self.root, to: dir)
        return dir
    }

    func domain(_ dir: URL, _ c: String, _ s: Int) -> URL {
        dir.appendingPathComponent("ImageNet-C/\(c)/\(s)")
    }

    @Test func layoutErrorsNameTheFolderOrFile() throws {
        let dir = try scratchCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        let fogClasses = domain(dir, "fog", 5)

        let noSnow = try #require(throws: DataError.self) { try open(directory: dir, corruptions: ["snow"]) }
        #expect(noSnow.file.hasSuffix("ImageNet-C/snow") && noSnow.message.contains("gaussian_noise, fog"))

        let noSeverity = try #require(throws: DataError.self) {
            try ImageFolderBenchmark(directory: dir, folderName: "ImageNet-C", severities: [3])
        }
        #expect(noSeverity.file.hasSuffix("gaussian_noise/3") && noSeverity.message.contains("missing severity folder"))

        // A missing image in one domain.
        let victim = try fm.contentsOfDirectory(atPath: fogClasses.appendingPathComponent("n09468604").path).sorted()[0]
        try fm.moveItem(at: fogClasses.appendingPathComponent("n09468604/\(victim)"), to: dir.appendingPathComponent(victim))
        let missing = try #require(throws: DataError.self) { try open(directory: dir) }
        #expect(missing.file.hasSuffix("fog/5/n09468604/\(victim)") && missing.message.contains("missing image"))
        try fm.moveItem(at: dir.appendingPathComponent(victim), to: fogClasses.appendingPathComponent("n09468604/\(victim)"))

        // A missing class folder in one domain.
        try fm.moveItem(at: fogClasses.appendingPathComponent("n02102040"), to: dir.appendingPathComponent("n02102040"))
        let missingClass = try #require(throws: DataError.self) { try open(directory: dir) }
        #expect(missingClass.file.hasSuffix("fog/5") && missingClass.message.contains("missing class folder n02102040"))
        try fm.moveItem(at: dir.appendingPathComponent("n02102040"), to: fogClasses.appendingPathComponent("n02102040"))

        // A stray non-JPEG file.
        try Data("x".utf8).write(to: fogClasses.appendingPathComponent("n01440764/notes.txt"))
        let stray = try #require(throws: DataError.self) { try open(directory: dir) }
        #expect(stray.file.hasSuffix("n01440764/notes.txt") && stray.message.contains("JPEG"))
        try fm.removeItem(at: fogClasses.appendingPathComponent("n01440764/notes.txt"))

        // An empty class folder everywhere.
        for c in ["fog", "gaussian_noise"] { for s in [1, 5] { try fm.createDirectory(at: domain(dir, c, s).appendingPathComponent("n00000001"), withIntermediateDirectories: false) } }
        let empty = try #require(throws: DataError.self) { try open(directory: dir) }
        #expect(empty.file.hasSuffix("n00000001") && empty.message.contains("empty class folder"))

        let nothing = try #require(throws: DataError.self) { try open(directory: dir.appendingPathComponent("nope")) }
        #expect(nothing.message.contains("does not exist"))
    }

    /// Corrupt and truncated JPEGs stop the read with the decoder's error naming the file; a file of the
    /// wrong size is refused naming the file and both sizes.
    @Test func badImagesStopTheReadNamingTheFile() throws {
        let dir = try scratchCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let b = try open(directory: dir)
        var x = Tensor(shape: [6, 3, 10, 12])
        let truncated = b.url(corruption: "fog", severity: 1, index: 4).path.replacingOccurrences(of: Self.root.path, with: dir.path)
        let data = try Data(contentsOf: URL(fileURLWithPath: truncated))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: truncated))
        let e1 = try #require(throws: DataError.self) {
            try x.withUnsafeMutableBufferPointer { try b.readImages(corruption: "fog", severity: 1, indices: Array(0..<6), into: $0, firstSlot: 0) }
        }
        #expect(e1.file == truncated)
        try Data("not a jpeg".utf8).write(to: URL(fileURLWithPath: truncated))
        let e2 = try #require(throws: DataError.self) {
            try x.withUnsafeMutableBufferPointer { try b.readImages(corruption: "fog", severity: 1, indices: [4], into: $0, firstSlot: 0) }
        }
        #expect(e2.file == truncated)
        // A 1x1 JPEG from the decoder fixtures in place of a 12x10 image.
        try Data(contentsOf: fixturesDirectory.appendingPathComponent("jpeg/gray_q75_1x1.jpg")).write(to: URL(fileURLWithPath: truncated))
        let e3 = try #require(throws: DataError.self) {
            try x.withUnsafeMutableBufferPointer { try b.readImages(corruption: "fog", severity: 1, indices: [4], into: $0, firstSlot: 0) }
        }
        #expect(e3.file == truncated && e3.message.contains("1x1") && e3.message.contains("12x10"))
    }
}
