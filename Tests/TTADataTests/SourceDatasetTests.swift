import Foundation
import Testing
import TTAData
import TTATensor
import TTATestSupport

/// Every accepted source-data layout decodes to the images and labels numpy computed.
/// Golden: `main()` in scripts/make_source_data_fixtures.py (expected.safetensors).
@Suite struct SourceDatasetTests {
    static let root = fixturesDirectory.appendingPathComponent("sourcedata")
    func path(_ name: String) -> String { Self.root.appendingPathComponent(name).path }

    @Test(arguments: [("npy_uint8", "npy_uint8", SourceDataset.Format.npy), ("npy_float", "npy_float", .npy),
                      ("cifar-10-batches-bin", "cifar10_bin", .cifarBinary), ("cifar-100-binary", "cifar100_bin", .cifarBinary),
                      ("cifar-10-batches-py", "cifar10_py", .cifarPython), ("cifar-100-python", "cifar100_py", .cifarPython),
                      ("cifar10_raw_bytes_p4", "raw_bytes", .cifarPython)])
    func layoutsDecodeToTheExpectedImages(_ folder: String, _ key: String, _ format: SourceDataset.Format) throws {
        let expected = try fixture("sourcedata/expected.safetensors")
        let data = try SourceDataset.load(path(folder))
        #expect(data.format == format)
        #expect(data.images == (try expected.tensor("\(key).x")))
        #expect(data.labels == (try expected.tensor("\(key).y")).storage.map { Int($0) })
    }

    /// The Python 2 cPickle layout of the official files (protocol 2, BINSTRING data) on its own.
    @Test func pythonTwoBatchAlone() throws {
        let batch = try CIFARPickle.readBatch(Self.root.appendingPathComponent("cifar-10-batches-py/data_batch_1"))
        #expect(batch.labels == [0, 5, 9] && batch.pixels.count == 3 * 3072)
    }

    @Test func aTorchvisionRootIsFollowed() throws {
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("tta-source-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: temp) }
        try FileManager.default.copyItem(at: Self.root.appendingPathComponent("cifar-10-batches-py"),
                                         to: temp.appendingPathComponent("cifar-10-batches-py"))
        #expect(try SourceDataset.load(temp.path).labels == [0, 5, 9, 4, 4])
    }

    /// Refusals name the file and what was expected; nothing in a pickle is ever run.
    @Test(arguments: [("bad/os_system_pickle", "global posix.system is not allowed"),
                      ("bad/truncated_batch", "truncated"),
                      ("bad/wrong_size.bin", "not a multiple of 3073"),
                      ("bad/npy_out_of_range", "must lie in [0, 1]"),
                      ("bad/npy_label_count", "expected 4 labels"),
                      ("bad/float_dtype_pickle", "numpy dtype 'f4' is refused"),
                      ("npy_uint8/images.npy", "give the folder holding images.npy and labels.npy"),
                      ("no-such-folder", "no such file or folder"),
                      ("bad", "no source data recognised")])
    func badInputIsRefusedWithAClearError(_ name: String, _ message: String) throws {
        do {
            _ = try SourceDataset.load(path(name))
            Issue.record("\(name) was accepted")
        } catch let e as DataError {
            #expect(e.description.contains(message), "\(e.description)")
            #expect(e.description.contains(name.split(separator: "/").last.map(String.init) ?? name))
        }
    }

    @Test func samplingIsSeededAndWithoutRepetition() throws {
        let data = try SourceDataset.load(path("cifar-10-batches-py"))
        var g1 = SeededGenerator(seed: 4), g2 = SeededGenerator(seed: 4)
        let a = data.sample(3, using: &g1), b = data.sample(3, using: &g2)
        #expect(a.labels == b.labels && a.images == b.images && a.count == 3)
        var g3 = SeededGenerator(seed: 4)
        let all = data.sample(nil, using: &g3)
        #expect(all.labels.sorted() == data.labels.sorted())
        let (images, labels) = all.batches(of: 2)
        #expect(images.map { $0.shape[0] } == [2, 2, 1] && labels.flatMap { $0 } == all.labels)
    }
}
