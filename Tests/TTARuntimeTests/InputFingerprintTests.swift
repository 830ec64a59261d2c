import Foundation
import Testing
import TTAData
import TTARuntime
import TTATestSupport

/// The input fingerprint of a JPEG-folder benchmark: one entry per domain folder, whose digest is that of
/// `sha256sum`'s listing of the files in reading order. Expected digests from coreutils, in the fixture
/// folder `Tests/Fixtures/imagenetc/ImageNet-C` (written by `imagenetc_folder()` in
/// scripts/make_imagenetc_fixtures.py):
///     cd fog/5 && find . -type f | sed 's|^\./||' | sort | xargs sha256sum | sha256sum
///     cd fog/5 && sha256sum $(cat ../../../list.txt) | sha256sum
@Suite struct InputFingerprintTests {
    static let root = fixturesDirectory.appendingPathComponent("imagenetc")

    func open(_ subset: ImageFolderBenchmark.Subset = .all) throws -> ImageFolderBenchmark {
        try ImageFolderBenchmark(directory: Self.root, folderName: "ImageNet-C", corruptions: nil, severities: [1, 5], subset: subset)
    }

    @Test func folderEntriesDigestTheSha256sumListing() throws {
        let b = try open()
        let groups = b.dataFileGroups(corruptions: ["fog", "gaussian_noise"], severities: [5, 1])
        #expect(groups.map(\.name) == ["fog/5", "fog/1", "gaussian_noise/5", "gaussian_noise/1"])
        let weights = Self.root.appendingPathComponent("list.txt")   // any file stands in for the weights
        let f = try InputFingerprint(weights: weights, data: groups)
        #expect(f.data.count == 4)
        #expect(f.data[0].path == b.folder.appendingPathComponent("fog/5").path)
        #expect(f.data[0].sha256 == "5aba6fc81b2b099b294d860a719ce3db02f96b1ebc14a668fd5a18e6ba0db60b")
        #expect(f.data[0].bytes == 2299 && f.data[0].files == 6)
        #expect(f.data[3].sha256 == "94d807fe5663bbb7556e0faa481a9e450fbb56a8ac918ce0bf47e8c0999b0489")
        // A single file keeps its own digest and has no file count.
        let weightsDigest = try SHA256.hex(fileAt: weights)
        #expect(f.weights.files == nil && f.weights.sha256 == weightsDigest)
        // The combined digest goes over names and digests, not over where the folder is.
        let lines = zip(groups, f.data).map { "\($0.name)\t\($1.sha256)\n" }.joined()
        #expect(f.dataSHA256 == SHA256.hex(Array(lines.utf8)))

        // A list subset hashes its files in the list's order.
        let listed = try open(.list(Self.root.appendingPathComponent("list.txt")))
        let g = try InputFingerprint(weights: weights, data: listed.dataFileGroups(corruptions: ["fog"], severities: [5]))
        #expect(g.data.map(\.files) == [3])
        #expect(g.data[0].sha256 == "843be69f01b982c6703ca92999b628e255042fba4cf44fa70d50f08855e61b3e")
    }

    /// A run hashes the images its stream reads: every image of each domain without --samples-per-domain (the same
    /// groups as the whole folders), two per domain with 2 (the 50,000-image pool is not hashed for a short run).
    @Test func groupsHoldTheImagesTheStreamReads() throws {
        let b = try open()
        let full = try BenchmarkStream(benchmark: b, configuration: StreamConfiguration(corruptions: ["fog"], severities: [5, 1]))
        #expect(b.dataFileGroups(readBy: full) == b.dataFileGroups(corruptions: ["fog"], severities: [5, 1]))
        let two = try BenchmarkStream(benchmark: b, configuration: StreamConfiguration(corruptions: ["fog"], severities: [5, 1], samplesPerDomain: 2))
        let groups = b.dataFileGroups(readBy: two)
        #expect(groups.map(\.name) == ["fog/5", "fog/1"] && groups.allSatisfy { $0.files.count == 2 })
    }

    @Test func aMissingFileIsNamed() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fingerprint-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let present = folder.appendingPathComponent("a.JPEG"), missing = folder.appendingPathComponent("b.JPEG")
        try Data([1, 2, 3]).write(to: present)
        let group = DataFileGroup(folder: folder, name: "fog/5", files: [present, missing])
        #expect {
            try InputFingerprint(weights: present, data: [group])
        } throws: { error in
            (error as? DataError)?.file == missing.path
        }
    }
}
