import Foundation
import Testing
import TTATensor
@testable import TTAData

// Fixtures in Tests/Fixtures/formats/ are written by scripts/make_format_fixtures.py; each test names
// the script function that wrote its files. expected.json holds their expected shapes and values.

/// Locates `Tests/Fixtures/formats/` relative to this source file and reads `expected.json`.
enum FormatFixtures {
    static func url(_ name: String, filePath: String = #filePath) -> URL {
        URL(fileURLWithPath: filePath)
            .deletingLastPathComponent()  // TTADataTests
            .deletingLastPathComponent()  // Tests
            .appendingPathComponent("Fixtures/formats", isDirectory: true)
            .appendingPathComponent(name)
    }

    static func data(_ name: String) throws -> Data { try Data(contentsOf: url(name)) }

    nonisolated(unsafe) static let expected: [String: Any] = {
        guard let data = try? Data(contentsOf: url("expected.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return object
    }()

    /// The expected record of one fixture file (or of one tensor inside a safetensors fixture).
    static func record(_ file: String, tensor: String? = nil) -> [String: Any] {
        guard let rec = expected[file] as? [String: Any] else { return [:] }
        guard let tensor else { return rec }
        return ((rec["tensors"] as? [String: Any])?[tensor] as? [String: Any]) ?? [:]
    }

    static func shape(_ rec: [String: Any]) -> [Int] { (rec["shape"] as? [NSNumber])?.map(\.intValue) ?? [-1] }
    static func bits(_ rec: [String: Any]) -> [UInt32] { (rec["f32_bits"] as? [NSNumber])?.map(\.uint32Value) ?? [] }
    static func ints(_ rec: [String: Any]) -> [Int] { (rec["ints"] as? [NSNumber])?.map(\.intValue) ?? [] }
}

/// A temporary directory removed when the value goes away.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("TTADataTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func file(_ name: String) -> URL { url.appendingPathComponent(name) }
}

/// Runs `body`, expecting a `DataError` for `file` whose `key` is `key` and whose description contains
/// every string in `contains`. Returns the error.
@discardableResult
func expectDataError(file: String, key: String?, contains: [String],
                     sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> DataError? {
    do {
        try body()
        Issue.record("expected a DataError containing \(contains), but nothing was thrown", sourceLocation: sourceLocation)
        return nil
    } catch let error as DataError {
        #expect(error.file == file, "error names the wrong file: \(error)", sourceLocation: sourceLocation)
        #expect(error.key == key, "error names the wrong key: \(error)", sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix(file + ": "), "\(error)", sourceLocation: sourceLocation)
        if let key {
            #expect(error.description.contains("'\(key)'"), "description does not name the key: \(error)",
                    sourceLocation: sourceLocation)
        }
        for s in contains {
            #expect(error.description.contains(s), "\"\(error)\" does not contain \"\(s)\"", sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected a DataError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// An in-memory .npy image with a version-1.0 header made of `header` (padded like numpy).
func npyBytes(header: String, payload: [UInt8] = [], major: UInt8 = 1) -> Data {
    var h = Array(header.utf8)
    let lengthSize = major == 1 ? 2 : 4
    let total = 8 + lengthSize + h.count + 1
    h += repeatElement(UInt8(ascii: " "), count: (64 - total % 64) % 64)
    h.append(UInt8(ascii: "\n"))
    var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0]
    for k in 0..<lengthSize { out.append(UInt8(truncatingIfNeeded: h.count >> (8 * k))) }
    return Data(out + h + payload)
}

@Suite("NPY")
struct NPYTests {
    // MARK: Files written by numpy

    /// make_npy_dtypes, make_npy_shapes, make_npy_versions, make_npy_handcrafted
    @Test(arguments: [
        "npy_dtypes_f4.npy", "npy_dtypes_f8.npy", "npy_dtypes_i4.npy", "npy_dtypes_i8.npy", "npy_dtypes_u1.npy",
        "npy_shapes_scalar.npy", "npy_shapes_empty.npy", "npy_shapes_1d.npy",
        "npy_versions_v2_f4.npy", "npy_versions_v3_i8.npy",
        "npy_handcrafted_py2long.npy", "npy_handcrafted_unordered.npy",
    ])
    func readsNumpyFiles(_ name: String) throws {
        let rec = FormatFixtures.record(name)
        #expect(!rec.isEmpty, "expected.json has no record for \(name)")
        let file = try NPYFile(contentsOf: FormatFixtures.url(name))
        #expect(file.shape == FormatFixtures.shape(rec))
        #expect(file.header.majorVersion == (rec["version"] as? NSNumber)?.intValue)
        #expect(file.header.dataOffset % 16 == 0)
        let floats = try file.floats()
        #expect(floats.map(\.bitPattern) == FormatFixtures.bits(rec))
        if file.dtype.isInteger {
            #expect(try file.ints() == FormatFixtures.ints(rec))
        }
        let t = try file.tensor()
        #expect(t.shape == file.shape && t.storage.map(\.bitPattern) == floats.map(\.bitPattern))
    }

    /// make_npy_dtypes: the dtype of each file.
    @Test func dtypesOfNumpyFiles() throws {
        let cases: [(String, NPYDType)] = [
            ("npy_dtypes_f4.npy", .float32), ("npy_dtypes_f8.npy", .float64), ("npy_dtypes_i4.npy", .int32),
            ("npy_dtypes_i8.npy", .int64), ("npy_dtypes_u1.npy", .uint8), ("npy_handcrafted_unordered.npy", .uint8),
        ]
        for (name, dtype) in cases {
            #expect(try NPYFile.read(FormatFixtures.url(name)).dtype == dtype, "\(name)")
        }
        // float64 1e300 does not fit a Float: it becomes +infinity, as numpy's astype(float32) does.
        let f8 = try NPYFile.read(FormatFixtures.url("npy_dtypes_f8.npy")).floats()
        #expect(f8[2] == .infinity && f8[0] == Float(0.1))
    }

    /// make_npy_dtypes: rows of a CIFAR-C-shaped (N, H, W, C) uint8 file, read without the rest.
    @Test func uint8RowsAndRowsAsFloats() throws {
        let name = "npy_dtypes_u1.npy"
        let file = try NPYFile.read(FormatFixtures.url(name))
        let all = FormatFixtures.ints(FormatFixtures.record(name)).map { UInt8($0) }
        #expect(file.shape == [4, 2, 3, 3])
        let row = 18
        #expect(try file.uint8Rows(1..<3) == Array(all[row..<(3 * row)]))
        #expect(try file.uint8Rows(0..<4) == all)
        #expect(try file.uint8Rows(4..<4) == [])
        #expect(try file.rowsAsFloats(3..<4) == all[(3 * row)...].map(Float.init))
        let f4 = try NPYFile.read(FormatFixtures.url("npy_versions_v2_f4.npy"))  // (3, 4)
        #expect(try f4.rowsAsFloats(1..<2) == [-1.5, -0.5, 0.5, 1.5])
    }

    // MARK: Writing

    /// make_npy_dtypes, make_npy_shapes: our writer produces the same bytes as np.save.
    @Test func writerMatchesNumpyBytes() throws {
        let f4 = try NPYFile.read(FormatFixtures.url("npy_dtypes_f4.npy"))
        #expect(try NPYFile.encode(floats: try f4.floats(), shape: [2, 3]) == FormatFixtures.data("npy_dtypes_f4.npy"))
        let u1 = try NPYFile.read(FormatFixtures.url("npy_dtypes_u1.npy"))
        #expect(try NPYFile.encode(uint8: try u1.uint8Rows(0..<4), shape: [4, 2, 3, 3])
                == FormatFixtures.data("npy_dtypes_u1.npy"))
        let i8 = try NPYFile.read(FormatFixtures.url("npy_dtypes_i8.npy"))
        #expect(try NPYFile.encode(int64: try i8.ints().map(Int64.init), shape: [10])
                == FormatFixtures.data("npy_dtypes_i8.npy"))
        for (name, shape) in [("npy_shapes_scalar.npy", [Int]()), ("npy_shapes_empty.npy", [0, 3]), ("npy_shapes_1d.npy", [5])] {
            let f = try NPYFile.read(FormatFixtures.url(name))
            #expect(try NPYFile.encode(floats: try f.floats(), shape: shape) == FormatFixtures.data(name), "\(name)")
        }
    }

    @Test func headerIsPaddedTo64WithNewline() {
        for shape in [[], [1], [50000, 32, 32, 3], [123456789012, 7], Array(repeating: 2, count: 40)] {
            let h = NPYFile.encodeHeader(dtype: .float32, shape: shape)
            #expect(h.count % 64 == 0 && h.last == UInt8(ascii: "\n"), "\(shape)")
        }
        // numpy 2.4 writes a 128-byte header for (50000, 32, 32, 3) uint8 (HEADER_LEN 118).
        let h = NPYFile.encodeHeader(dtype: .uint8, shape: [50000, 32, 32, 3])
        #expect(h.count == 128 && h[8] == 118 && h[9] == 0)
    }

    @Test func roundTripsThroughFiles() throws {
        let dir = try TempDir()
        let floats: [Float] = [1, -2.5, .infinity, -0.0, .greatestFiniteMagnitude, .leastNonzeroMagnitude]
        try NPYFile.write(floats: floats, shape: [3, 2], to: dir.file("a.npy"))
        let a = try NPYFile.read(dir.file("a.npy"))
        #expect(a.shape == [3, 2] && a.dtype == .float32 && a.header.majorVersion == 1)
        #expect(try a.floats().map(\.bitPattern) == floats.map(\.bitPattern))

        try NPYFile.write(uint8: [0, 1, 255, 128], shape: [2, 2, 1], to: dir.file("b.npy"))
        #expect(try NPYFile.read(dir.file("b.npy")).uint8Rows(1..<2) == [255, 128])

        let big: [Int64] = [Int64.min, -1, 0, Int64.max]
        try NPYFile.write(int64: big, shape: [4], to: dir.file("c.npy"))
        #expect(try NPYFile.read(dir.file("c.npy")).ints() == big.map(Int.init))

        // Overwriting is atomic and leaves no temporary files behind.
        try NPYFile.write(Tensor(shape: [2], storage: [7, 8]), to: dir.file("a.npy"))
        #expect(try NPYFile.read(dir.file("a.npy")).floats() == [7, 8])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).sorted() == ["a.npy", "b.npy", "c.npy"])
    }

    @Test func writeRefusesMismatchedShape() {
        expectDataError(file: "/tmp/x.npy", key: "shape", contains: ["shape [2, 3] needs 6 elements, got 5"]) {
            try NPYFile.write(floats: [1, 2, 3, 4, 5], shape: [2, 3], to: URL(fileURLWithPath: "/tmp/x.npy"))
        }
        expectDataError(file: "<memory>", key: "shape", contains: ["negative dimension"]) {
            _ = try NPYFile.encode(uint8: [], shape: [-1, 0])
        }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/x.npy"))
    }

    // MARK: Hostile files written by numpy

    /// make_npy_hostile
    @Test(arguments: [
        ("npy_hostile_fortran.npy", "fortran_order", "Fortran-order (column-major) arrays are not supported"),
        ("npy_hostile_object.npy", "descr", "pickled .npy files are refused"),
        ("npy_hostile_bigendian.npy", "descr", "big-endian dtype '>f4' is not supported"),
        ("npy_hostile_f2.npy", "descr", "unsupported dtype '<f2'"),
        ("npy_hostile_structured.npy", "descr", "structured dtypes"),
        ("npy_hostile_truncated.npy", "shape", "data is truncated: shape (10,) of <f4 needs 40 bytes after the 128-byte header, but the file has only 34"),
    ])
    func refusesHostileNumpyFiles(_ name: String, _ field: String, _ message: String) throws {
        let url = FormatFixtures.url(name)
        let rec = FormatFixtures.record(name)
        let err = expectDataError(file: url.path, key: field, contains: [message, "header field '\(field)'"]) {
            _ = try NPYFile(contentsOf: url)
        }
        if let err, let hint = rec["error"] as? String {
            #expect(err.description.contains(hint))
            #expect(rec["field"] as? String == field)
        }
    }

    @Test func missingFileNamesThePath() {
        let url = URL(fileURLWithPath: "/nonexistent/dir/labels.npy")
        expectDataError(file: url.path, key: nil, contains: ["cannot read file"]) { _ = try NPYFile.read(url) }
    }

    /// A directory or a device is refused by name before reading (reading /dev/zero would never end).
    @Test func directoriesAndDevicesAreRefused() throws {
        let dir = try TempDir()
        let device = URL(fileURLWithPath: "/dev/zero")
        for (url, message) in [(dir.url, "is a directory; expected a regular file"), (device, "is a device; expected a regular file")] {
            expectDataError(file: url.path, key: nil, contains: [message]) { _ = try NPYFile.read(url) }
            expectDataError(file: url.path, key: nil, contains: [message]) { _ = try SafeTensorsFile.read(url) }
            expectDataError(file: url.path, key: nil, contains: [message]) { _ = try JPEGImage.read(url) }
        }
    }

    // MARK: Hostile in-memory files

    private let name = "bad.npy"
    private let goodDict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"

    @Test func refusesBrokenPrefixes() {
        expectDataError(file: name, key: nil, contains: ["file is 0 bytes", "not an .npy file"]) {
            _ = try NPYFile(data: Data(), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["file is 9 bytes"]) {
            _ = try NPYFile(data: Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, 0]), name: name)
        }
        expectDataError(file: name, key: nil, contains: ["expected magic bytes \\x93NUMPY", "50 4B 03 04"]) {
            _ = try NPYFile(data: Data([0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0]), name: name)
        }
        expectDataError(file: name, key: "version", contains: ["unsupported .npy format version 4.0"]) {
            _ = try NPYFile(data: npyBytes(header: goodDict, payload: Array(repeating: 0, count: 8), major: 4), name: name)
        }
        var minor = npyBytes(header: goodDict, payload: Array(repeating: 0, count: 8))
        minor[7] = 1
        expectDataError(file: name, key: "version", contains: ["version 1.1"]) { _ = try NPYFile(data: minor, name: name) }
        expectDataError(file: name, key: "header_len", contains: ["too short for a version 2.0 header length"]) {
            _ = try NPYFile(data: Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0, 0, 0, 0]), name: name)
        }
    }

    @Test func refusesBadHeaderLengths() {
        // v1 header length larger than the file.
        let short = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, 0xFF, 0xFF] + Array("{}".utf8))
        expectDataError(file: name, key: "header_len", contains: ["header length 65535 runs past the end of the file", "file is 12 bytes"]) {
            _ = try NPYFile(data: short, name: name)
        }
        // v2 header length above the 1 MB cap (refused before looking further).
        let huge = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        expectDataError(file: name, key: "header_len", contains: ["header length 4294967295 exceeds the limit of 1000000 bytes"]) {
            _ = try NPYFile(data: huge, name: name)
        }
    }

    @Test func refusesMalformedHeaderDicts() {
        let payload = [UInt8](repeating: 0, count: 64)
        let cases: [(header: String, field: String?, message: String)] = [
            ("not a dict", nil, "expected '{', found 'n'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ", nil, "unexpected end of header inside the dict"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", nil, "after the closing '}'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) 'x': 1}", nil, "expected ',' or '}'"),
            ("{descr: '<f4'}", nil, "expected a quoted key"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'a)}", "shape", "newline inside a string"),
            ("{'descr': '<f4', 'fortran_order': false, 'shape': (2,), }", "fortran_order", "unsupported value 'false'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,), }", "shape", "invalid integer literal"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,), }", "shape", "invalid integer literal"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "extra", "unexpected key in the header dict"),
            ("{'descr': '<f4', 'shape': (2,), }", "fortran_order", "missing from the header dict"),
            ("{'fortran_order': False, 'shape': (2,), }", "descr", "missing from the header dict"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (3,)}", "shape", "appears twice"),
            ("{'descr': 5, 'fortran_order': False, 'shape': (2,), }", "descr", "must be a dtype string like '<f4', found 5"),
            ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "descr", "pickled .npy files are refused"),
            ("{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", "descr", "big-endian dtype '>i8'"),
            ("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "descr", "unsupported dtype '<c8'; expected one of"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", "fortran_order", "must be True or False, found 0"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "fortran_order", "Fortran-order"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", "shape", "must be a tuple of non-negative integers, found 2"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", "shape", "must be a tuple of non-negative integers, found a list"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': None, }", "shape", "found None"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", "shape", "dimension 1 is negative (-3)"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': ('2',), }", "shape", "dimension 0 must be a non-negative integer, found '2'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': ((2,),), }", "shape", "dimension 0 must be a non-negative integer"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "shape", "dimension 0 (99999999999999999999) is too large"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "shape", "element count of shape (4294967296, 4294967296) overflows"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }", "shape", "byte size of shape (2305843009213693952,) with dtype <f8 overflows"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1000000), }", "shape", "needs 12000000 bytes"),
        ]
        for c in cases {
            expectDataError(file: name, key: c.field, contains: [c.message]) {
                _ = try NPYFile(data: npyBytes(header: c.header, payload: payload), name: name)
            }
        }
        // Deeply nested tuples do not overflow the stack.
        let deep = "{'descr': '<f4', 'fortran_order': False, 'shape': " + String(repeating: "(", count: 100_000) + "}"
        expectDataError(file: name, key: "shape", contains: ["nested too deeply"]) {
            _ = try NPYFile(data: npyBytes(header: deep, major: 2), name: name)
        }
    }

    @Test func acceptsLenientButValidHeaders() throws {
        let payload: [UInt8] = [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]  // 1.0, 2.0
        let headers = [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}",
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L,)}",
            "{ 'descr' : '<f4' ,\t'fortran_order' : False , 'shape' : ( 2 , ) , }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((2),), }",
        ]
        for h in headers {
            let f = try NPYFile(data: npyBytes(header: h, payload: payload), name: name)
            #expect(try f.shape == [2] && f.floats() == [1, 2], "\(h)")
        }
        // Version 2.0 and 3.0 prefixes, `<u1`, trailing bytes after the data (ignored, as np.load does).
        let u1 = try NPYFile(data: npyBytes(header: "{'descr': '<u1', 'fortran_order': False, 'shape': (2, 1), }",
                                            payload: [9, 8, 7], major: 3), name: name)
        #expect(try u1.dtype == .uint8 && u1.header.majorVersion == 3 && u1.uint8Rows(0..<2) == [9, 8])
        // Zero-size arrays need no data and any rows range within bounds works.
        let empty = try NPYFile(data: npyBytes(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (0, 5), }"), name: name)
        #expect(try empty.count == 0 && empty.ints() == [] && empty.rowsAsFloats(0..<0) == [])
    }

    @Test func refusesBadAccess() throws {
        let f4 = try NPYFile(data: npyBytes(header: goodDict, payload: [UInt8](repeating: 0, count: 8)), name: name)
        expectDataError(file: name, key: "descr", contains: ["expected an integer dtype", "found '<f4'"]) { _ = try f4.ints() }
        expectDataError(file: name, key: "descr", contains: ["expected dtype '|u1' (uint8) for raw byte rows, found '<f4'"]) {
            _ = try f4.uint8Rows(0..<1)
        }
        expectDataError(file: name, key: "shape", contains: ["rows 1..<3 are out of range: the array has 2 rows"]) {
            _ = try f4.rowsAsFloats(1..<3)
        }
        let scalar = try NPYFile(data: npyBytes(header: "{'descr': '|u1', 'fortran_order': False, 'shape': (), }", payload: [5]), name: name)
        #expect(try scalar.ints() == [5])
        expectDataError(file: name, key: "shape", contains: ["a 0-d array has no rows"]) { _ = try scalar.uint8Rows(0..<1) }
    }

    /// make_npy_dtypes, make_npy_versions: corrupted copies never crash; what opens reads fully.
    @Test func corruptedFilesNeverCrash() throws {
        var g = SeededGenerator(seed: 11)
        for fname in ["npy_dtypes_u1.npy", "npy_dtypes_f8.npy", "npy_versions_v2_f4.npy", "npy_versions_v3_i8.npy"] {
            let original = [UInt8](try FormatFixtures.data(fname))
            for trial in 0..<1500 {
                var bytes = original
                if trial % 2 == 0 {
                    for _ in 0..<(1 + Int(g.next() % 4)) {
                        // Mostly hit the header, where the parsing happens.
                        let i = Int(g.next() % UInt64(min(bytes.count, trial % 4 == 0 ? 140 : bytes.count)))
                        bytes[i] = UInt8(truncatingIfNeeded: g.next())
                    }
                } else {
                    bytes.removeLast(Int(g.next() % UInt64(bytes.count)))
                }
                if let f = try? NPYFile(data: Data(bytes), name: fname) {
                    #expect(throws: Never.self) { _ = try f.floats() }
                    _ = try? f.ints()
                    if let n = f.shape.first { _ = try? f.rowsAsFloats(0..<n); _ = try? f.uint8Rows(0..<n) }
                }
            }
        }
    }

    // MARK: Found by fuzzing (scripts/fuzz.sh npy)

    /// No rows, but rows so large that their size overflows Int: the array holds no bytes, so the
    /// header is valid, and reading its (empty) rows used to trap multiplying the row dimensions.
    @Test func zeroRowsOfAnOverflowingRowSize() throws {
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 3), }"
        let f = try NPYFile(data: npyBytes(header: header), name: name)
        #expect(f.shape == [0, 4294967296, 4294967296, 3] && f.count == 0)
        #expect(try f.floats() == [] && f.ints() == [] && f.tensor().storage == [])
        #expect(try f.uint8Rows(0..<0) == [] && f.rowsAsFloats(0..<0) == [])
        expectDataError(file: name, key: "shape", contains: ["rows 0..<1 are out of range: the array has 0 rows"]) {
            _ = try f.uint8Rows(0..<1)
        }
    }

    @Test func errorDescriptionFormat() {
        let e = DataError(file: "labels.npy", key: "descr", keyKind: "header field", message: "unsupported dtype '<c8'")
        #expect(e.description == "labels.npy: header field 'descr': unsupported dtype '<c8'")
        #expect(DataError(file: "<memory>", message: "x").description == "<memory>: x")
    }
}
